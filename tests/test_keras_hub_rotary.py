"""A keras-hub family with rotary positions (Qwen) as a tfpref backbone: against keras-hub's own
forward pass, cached and uncached generation, left padding, training and LoRA through the CLI, the
export with the Qwen tokenizer in the graph, and the preset's limits."""
import json
import shutil

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli_in_process, tiny_config, write_tiny_corpus
from keras_hub_presets import export_and_check_against_the_library, preset_backbone, save_tiny_qwen_preset
from tfpref.cli import train_main
from tfpref.config import ModelConfig
from tfpref.data.tokenizers import KerasHubTokenizer
from tfpref.errors import UserError
from tfpref.models import CausalLM, build_model
from tfpref.models.keras_hub import KerasHubBackbone, is_lora_weight, load_causal_lm, preset_limits
from tfpref.models.keras_hub_layouts import QWEN_CONTEXT_LENGTH
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.sampling import left_pad
from tfpref.runs import load_run, resolve_config

NEW = 10


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_qwen_preset(tmp_path_factory.mktemp("preset") / "tiny_qwen")


@pytest.fixture(scope="module")
def backbone(preset):
    return KerasHubBackbone(preset)


def prompts(vocab_size, lengths=(4, 9, 1, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, n).astype(np.int32) for n in lengths]


def log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("tied", [False, True])
def test_forward_and_logprobs_equal_keras_hubs_own_forward_pass(tmp_path, preset, tied):
    path = save_tiny_qwen_preset(tmp_path / "tied", tie_word_embeddings=True) if tied else preset
    hub = load_causal_lm(path)
    assert hub.backbone.tie_word_embeddings == tied
    backbone = KerasHubBackbone(path)  # the preset's vocabulary only, as keras-hub's model has it
    ids = np.random.default_rng(1).integers(0, backbone.vocab_size, (3, 12)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    expected = hub({"token_ids": ids, "padding_mask": mask}).numpy()
    np.testing.assert_allclose(backbone(ids).numpy(), expected, atol=1e-4)
    want = np.take_along_axis(log_softmax(expected[:, :-1]), ids[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(sequence_logprobs(backbone, ids, mask).numpy(), want, atol=1e-4)
    # As a run builds it, with tfpref's control tokens added: the preset's own logits are unchanged.
    policy = CausalLM(preset_backbone(path), name="causal_lm")
    assert policy.vocab_size == backbone.vocab_size + len(policy.backbone.control_tokens)
    np.testing.assert_allclose(policy(ids).numpy()[..., :backbone.vocab_size], expected, atol=1e-4)


def test_left_padded_rows_score_as_unpadded_ones(backbone):
    rows = prompts(backbone.vocab_size, lengths=(7, 3, 12))
    ids, mask = left_pad(rows)
    batched = sequence_logprobs(backbone, ids, mask).numpy()
    for r, row in enumerate(rows):
        alone = sequence_logprobs(backbone, row[None], np.ones([1, len(row)], bool)).numpy()[0]
        np.testing.assert_allclose(batched[r, ids.shape[1] - len(row):], alone, atol=1e-4)


def test_serialization_round_trip_records_the_preset(preset, backbone):
    assert backbone.get_config()["preset"] == preset
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    ids = tf.constant([[5, 6, 7]])
    np.testing.assert_allclose(restored(ids).numpy(), backbone(ids).numpy(), atol=1e-6)


def test_qwen_tokenizer_keeps_id_0_as_text(preset):
    tokenizer = KerasHubTokenizer(preset)
    # Qwen has no start token and names id 0 ("!") its pad id: BOS and padding are its end token.
    end = tokenizer.hub_tokenizer.end_token_id
    last = tokenizer.hub_tokenizer.vocabulary_size() - 1
    assert tokenizer.bos_id == tokenizer.eos_id == tokenizer.pad_id == end == last
    assert set(tokenizer.generation_banned_ids) == set(tokenizer.control_ids)  # only tfpref's added tokens
    text = "hi! def f(x):\n\treturn x  # é\r\n"
    ids = tokenizer.encode(text, add_bos=True, add_eos=True)
    assert 0 in ids and ids[0] == ids[-1] == end
    assert tokenizer.decode(ids) == text


def test_preset_limits_and_refusals(tmp_path, preset):
    # Qwen's config records no maximum: the limit is the family's pretraining context, not the
    # preprocessor's sequence_length (64 here), which only pads keras-hub's own batches.
    assert preset_limits(preset) == ("QwenBackbone", QWEN_CONTEXT_LENGTH)
    assert KerasHubBackbone(preset).max_seq_len == QWEN_CONTEXT_LENGTH
    corpus = write_tiny_corpus(tmp_path)
    assert resolve_config(tiny_config(tmp_path / "a", corpus, model="keras_hub", preset=preset, seq_len=128))
    with pytest.raises(UserError, match=f"--seq_len {QWEN_CONTEXT_LENGTH + 1} is above the QwenBackbone "
                                        f"preset's maximum of {QWEN_CONTEXT_LENGTH} positions"):
        resolve_config(tiny_config(tmp_path / "b", corpus, model="keras_hub", preset=preset,
                                   seq_len=QWEN_CONTEXT_LENGTH + 1))
    other = tmp_path / "qwen3"
    shutil.copytree(preset, other)
    config = json.load(open(other / "config.json"))
    (other / "config.json").write_text(json.dumps({**config, "class_name": "Qwen3Backbone"}))
    with pytest.raises(UserError, match=r"^--preset .*qwen3: a Qwen3Backbone: only GPT2Backbone and QwenBackbone "
                                        r"presets are supported so far$"):
        resolve_config(tiny_config(tmp_path / "c", corpus, model="keras_hub", preset=str(other)))
    windowed = tmp_path / "windowed"
    shutil.copytree(preset, windowed)
    (windowed / "config.json").write_text(json.dumps(
        {**config, "config": {**config["config"], "use_sliding_window_attention": True}}))
    with pytest.raises(UserError, match=r"^--preset .*windowed: a QwenBackbone: sliding-window attention is not "
                                        r"supported \(keras-hub cannot cache it in a compiled loop\)$"):
        resolve_config(tiny_config(tmp_path / "d", corpus, model="keras_hub", preset=str(windowed)))
    with pytest.raises(ValueError, match="a QwenBackbone: sliding-window attention is not supported"):
        KerasHubBackbone(str(windowed))
    llama = keras_hub.models.LlamaBackbone(vocabulary_size=16, num_layers=1, num_query_heads=2, num_key_value_heads=1,
                                           hidden_dim=8, intermediate_dim=16)
    with pytest.raises(ValueError, match="a LlamaBackbone: only GPT2Backbone and QwenBackbone presets"):
        KerasHubBackbone(preset, hub_backbone=llama)


def train_flags(preset, corpus, model_dir, *extra):
    return ["--model", "keras_hub", "--preset", preset, "--objective", "mle", "--data", corpus, "--seq_len", "32",
            "--batch_size", "4", "--learning_rate", "1e-2", "--warmup_steps", "2", "--eval_batches", "2",
            "--no_progress", "--no-export", "--no-jit_compile", "--model_dir", str(model_dir), *extra]


def mean_mle_loss(model, rows):
    ids = tf.constant(np.stack(rows))
    mask = tf.ones_like(ids, tf.bool)
    return float(-tf.reduce_mean(sequence_logprobs(model, ids, mask)))


def corpus_rows(preset, corpus, count=4, length=33):
    ids = KerasHubTokenizer(preset).encode(open(corpus).read()[:4000])
    return [ids[i * length:(i + 1) * length] for i in range(count)]


@pytest.mark.slow
def test_mle_on_a_qwen_preset_trains_through_the_cli(tmp_path, preset):
    corpus = write_tiny_corpus(tmp_path)
    result = run_cli_in_process(train_main, train_flags(preset, corpus, tmp_path / "run", "--train_steps", "6"))
    assert result.returncode == 0, result.stderr
    stored = json.load(open(tmp_path / "run" / "config.json"))
    assert stored["model"]["model"] == "keras_hub" and stored["model"]["preset"] == preset
    _, trained, _ = load_run(str(tmp_path / "run"))
    assert isinstance(trained.backbone, KerasHubBackbone)
    rows = corpus_rows(preset, corpus)
    assert mean_mle_loss(trained, rows) < mean_mle_loss(KerasHubBackbone(preset), rows) - 0.1


@pytest.mark.slow
def test_lora_on_a_qwen_preset_trains_the_adapters_only(tmp_path, preset):
    adapted = KerasHubBackbone(preset, lora_rank=2)
    assert adapted.trainable_variables and all(is_lora_weight(v) for v in adapted.trainable_variables)
    assert len(adapted.trainable_variables) == 2 * 2 * 2  # a and b, of query and value, in 2 layers

    corpus = write_tiny_corpus(tmp_path)
    result = run_cli_in_process(train_main, train_flags(preset, corpus, tmp_path / "run", "--train_steps", "4",
                                                        "--lora_rank", "2"))
    assert result.returncode == 0, result.stderr
    assert json.load(open(tmp_path / "run" / "config.json"))["model"]["lora_rank"] == 2
    _, trained, _ = load_run(str(tmp_path / "run"))
    base = {v.path: v.numpy() for v in preset_backbone(preset).weights}
    changed = 0
    for variable in trained.backbone.weights:
        if is_lora_weight(variable):
            changed += variable.path.endswith("lora_kernel_b") and bool(np.any(variable.numpy() != 0))
        else:
            np.testing.assert_array_equal(variable.numpy(), base[variable.path], err_msg=variable.path)
    assert changed == 4  # every b factor (initialised to zero) was trained


@pytest.mark.slow
def test_export_generates_and_scores_with_the_qwen_tokenizer_in_the_graph(tmp_path, preset):
    import tensorflow_text  # noqa: F401 (registers the ops of keras-hub's in-graph tokenizer; optional, heavy)

    policy = CausalLM(build_model(ModelConfig(model="keras_hub", preset=preset)), name="causal_lm")
    # The last prompt is longer than the preprocessor's 64: rotary positions have no table to run off.
    export_and_check_against_the_library(policy, KerasHubTokenizer(preset), tmp_path,
                                         ["def f(x):", "hi!\n", "x", "return x! " * 20],
                                         ["def f(x):\n    return x!\n", "é"], NEW)
