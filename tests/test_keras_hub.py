"""keras-hub presets as tfpref backbones: the adapter against keras-hub's own forward pass, the
sampler's cached and uncached paths, left-padding invariance, serialization."""
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli_in_process, tiny_config, write_tiny_corpus
from tfpref.cli import evaluate_main
from keras_hub_presets import export_and_check_against_the_library, preset_backbone, save_tiny_gpt2_preset
from tfpref.config import ModelConfig, inapplicable_flags
from tfpref.data.pipeline import build_token_data
from tfpref.data.preferences import encode_completion, load_preferences, preference_arrays
from tfpref.data.sft import load_sft_data
from tfpref.data.tokenizers import KerasHubTokenizer
from tfpref.errors import UserError
from tfpref.models import CausalLM, build_model
from tfpref.models.keras_hub import KerasHubBackbone, is_lora_weight, load_causal_lm
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.sampling import Sampler, left_pad
from tfpref.rewards import RewardModelReward
from tfpref.runs import load_run, resolve_config
from tfpref.training.run import train

NEW = 10


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


@pytest.fixture(scope="module")
def backbone(preset):
    return KerasHubBackbone(preset)


def test_forward_and_logprobs_equal_keras_hubs_own_forward_pass(preset, backbone):
    hub = load_causal_lm(preset)
    ids = np.random.default_rng(1).integers(0, backbone.vocab_size, (3, 12)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    expected = hub({"token_ids": ids, "padding_mask": mask}).numpy()
    np.testing.assert_allclose(backbone(ids).numpy(), expected, atol=1e-5)
    # sequence_logprobs: log-softmax of keras-hub's logits at each next token.
    logits = expected[:, :-1]
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    want = np.take_along_axis(log_softmax, ids[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(sequence_logprobs(backbone, ids, mask).numpy(), want, atol=1e-5)


def test_serialization_round_trip_records_the_preset(preset, backbone):
    config = backbone.get_config()
    assert config["preset"] == preset and config["lora_rank"] == 0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    ids = tf.constant([[5, 6, 7]])
    np.testing.assert_allclose(restored(ids).numpy(), backbone(ids).numpy(), atol=1e-6)


# ---- the preset's tokenizer, the config, a training run ------------------------------------------

def test_preset_tokenizer_round_trips_text(preset):
    tokenizer = KerasHubTokenizer(preset)
    text = "def f(x):\n\treturn x  # é\r\n"
    ids = tokenizer.encode(text, add_bos=True, add_eos=True)
    assert ids.dtype == np.int32 and ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id
    assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == preset_backbone(preset).vocab_size
    assert [list(x) for x in tokenizer.encode_all(["ab", text])] == [list(tokenizer.encode("ab")),
                                                                     list(tokenizer.encode(text))]
    assert tokenizer.control_ids == tuple(range(272, 280))  # appended to the preset's 272 ids


def test_config_refuses_what_a_preset_cannot_do(tmp_path, preset):
    def config(**overrides):
        return tiny_config(tmp_path / "run", "stdlib", **{"model": "keras_hub", "preset": preset, **overrides})

    config().validate()
    with pytest.raises(UserError, match="--model keras_hub needs --preset"):
        config(preset="").validate()
    with pytest.raises(UserError, match="--objective denoising is not supported yet"):
        config(objective="denoising").validate()
    refused = dict(inapplicable_flags(config(), ["d_model", "num_layers", "dropout", "ff_dim", "lora_rank"]))
    assert set(refused) == {"d_model", "num_layers", "dropout", "ff_dim"}
    assert "--model transformer, lstm, conv only, not keras_hub" in refused["d_model"]
    transformer = tiny_config(tmp_path / "other", "stdlib")
    assert [name for name, _ in inapplicable_flags(transformer, ["preset", "lora_rank"])] == ["preset", "lora_rank"]


def mean_mle_loss(model, batch):
    logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"])
    mask = tf.cast(batch["padding_mask"][:, 1:], tf.float32)
    return float(-tf.reduce_sum(logprobs) / tf.reduce_sum(mask))


@pytest.mark.slow
def test_mle_on_a_preset_trains_restores_and_resumes(tmp_path, preset, capsys):
    corpus = write_tiny_corpus(tmp_path)
    config = tiny_config(tmp_path / "run", corpus, model="keras_hub", preset=preset, train_steps=6,
                         learning_rate=1e-2, checkpoint_every=3)
    result = train(config, show_progress=False)
    assert result["step"] == 6 and "validation_bits_per_token" in result and "validation_bits_per_byte" not in result
    stored = json.load(open(tmp_path / "run" / "config.json"))
    assert stored["model"]["model"] == "keras_hub" and stored["model"]["preset"] == preset

    _, trained, _ = load_run(str(tmp_path / "run"))
    assert isinstance(trained.backbone, KerasHubBackbone)
    tokenizer = KerasHubTokenizer(preset)
    data = build_token_data([open(corpus).read()[:3000]], 32, tokenizer=tokenizer)
    rows = [data.stream[s:s + n] for s, n in zip(data.starts[:4], data.lengths[:4])]
    batch = {"token_ids": tf.constant(np.stack(rows)), "padding_mask": tf.ones([4, 33], tf.bool)}
    assert mean_mle_loss(trained, batch) < mean_mle_loss(preset_backbone(preset), batch) - 0.1

    config.train.train_steps = 8  # the same run, longer: resumes from its step-6 checkpoint
    assert train(config, show_progress=False)["step"] == 8
    assert "from step 6" in capsys.readouterr().out

    # evaluate.py measures a keras_hub run's likelihood (its held-out data tokenized by the preset), and
    # samples it when asked, in the preset's tokens, within its positions.
    result = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "run"), "--max_batches", "1"])
    assert result.returncode == 0, result.stderr
    assert json.load(open(tmp_path / "run" / "eval" / "metrics.json"))["metrics"]["nll"] > 0
    result = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "run"), "--max_batches", "1",
                                                "--num_samples", "2", "--max_new_tokens", "8"])
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in open(tmp_path / "run" / "eval" / "samples.jsonl")]
    assert len(samples) == 2 and all(0 < s["num_tokens"] <= 8 for s in samples)
    assert samples[0]["prompt"].startswith("def function_")  # the held-out chunk, decoded by the preset
    result = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "run"), "--num_samples", "2"])
    assert result.returncode == 2 and "--max_new_tokens 256 exceeds the model's 64 positions" in result.stderr


def test_lora_trains_the_adapters_only(tmp_path, preset):
    adapted = KerasHubBackbone(preset, lora_rank=2)
    assert adapted.trainable_variables and all(is_lora_weight(v) for v in adapted.trainable_variables)
    assert len(adapted.trainable_variables) == 2 * 2 * 2  # a and b, of query and value, in 2 layers

    corpus = write_tiny_corpus(tmp_path)
    config = tiny_config(tmp_path / "run", corpus, model="keras_hub", preset=preset, lora_rank=2, train_steps=4,
                         learning_rate=1e-2)
    train(config, show_progress=False)
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


def test_sft_on_a_preset_trains_on_prompt_completion_records(tmp_path, preset):
    records = [{"prompt": f"def add_{i}(x):\n", "completion": f"    return x + {i}\n",
                "split": "validation" if i % 5 == 0 else "train"} for i in range(40)]
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = KerasHubTokenizer(preset)
    data = load_sft_data(str(path), 32, "train", tokenizer=tokenizer)
    row, completion = data.arrays["token_ids"][0], data.arrays["completion_mask"][0]
    assert row[0] == tokenizer.bos_id
    assert tokenizer.decode(row[completion]) == records[1]["completion"]
    config = tiny_config(tmp_path / "run", str(path), model="keras_hub", preset=preset, objective="sft",
                         train_steps=3)
    assert train(config, show_progress=False)["step"] == 3


def test_run_refuses_a_missing_preset_and_a_seq_len_beyond_its_positions(tmp_path, preset):
    corpus = write_tiny_corpus(tmp_path)
    with pytest.raises(UserError, match="--preset .*nowhere: not a keras-hub preset"):
        resolve_config(tiny_config(tmp_path / "a", corpus, model="keras_hub", preset=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match="--seq_len 65 is above the GPT2Backbone preset's maximum of 64"):
        resolve_config(tiny_config(tmp_path / "b", corpus, model="keras_hub", preset=preset, seq_len=65))
    assert resolve_config(tiny_config(tmp_path / "c", corpus, model="keras_hub", preset=preset, seq_len=64))
    rotary = tmp_path / "llama"
    shutil.copytree(preset, rotary)
    config = json.load(open(rotary / "config.json"))
    (rotary / "config.json").write_text(json.dumps({**config, "class_name": "LlamaBackbone"}))
    with pytest.raises(UserError, match="a LlamaBackbone: only GPT2Backbone and QwenBackbone presets are supported"):
        resolve_config(tiny_config(tmp_path / "d", corpus, model="keras_hub", preset=str(rotary)))


class EndTokenBiased:
    """A language model whose end-token logit is raised by `bias`: so that rows end at different steps."""

    def __init__(self, model, bias):
        self.model, self.bias, self.vocab_size = model, bias, model.vocab_size

    def logits_from_hidden(self, hidden):
        logits = self.model.logits_from_hidden(hidden)
        return logits + self.bias * tf.one_hot(self.model.eos_id, self.vocab_size)

    def __getattr__(self, name):  # hidden_states, init_cache, hidden_states_cached: the model's own
        return getattr(self.model, name)


def test_generation_stops_at_the_presets_end_token(preset):
    config = ModelConfig(model="keras_hub", preset=preset)
    policy = CausalLM(build_model(config), name="causal_lm")
    tokenizer = KerasHubTokenizer(preset)
    assert policy.eos_id == tokenizer.eos_id == 0  # <|endoftext|>, also the start and pad token
    # BOS, EOS and padding are one token: it must stay possible; the control tokens are never emitted.
    assert policy.banned_ids() == tokenizer.control_ids
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(policy.backbone))
    assert restored.eos_id == policy.eos_id and restored.generation_banned_ids == tokenizer.control_ids

    rows = [tokenizer.encode(text, add_bos=True) for text in ("def f", "x = 1", "import os", "class A:")] * 4
    sampler = Sampler(EndTokenBiased(policy, 4.0), NEW, banned_ids=policy.banned_ids(), eos_id=policy.eos_id,
                      jit_compile=False)
    out = sampler(*left_pad(rows), temperature=1.0, seed=3)
    assert out["finished"].any() and not out["finished"].all()
    for tokens, mask, finished, length in zip(out["tokens"], out["mask"], out["finished"], out["lengths"]):
        assert mask[:length].all() and not mask[length:].any()
        generated = list(tokens[:length])
        assert finished == (generated[-1] == policy.eos_id) and policy.eos_id not in generated[:-1]
        assert finished or length == NEW


@pytest.mark.slow
def test_export_generates_and_scores_with_the_presets_tokenizer_in_the_graph(tmp_path, preset):
    import tensorflow_text  # noqa: F401 (registers the ops of keras-hub's in-graph tokenizer; optional, heavy)

    policy = CausalLM(build_model(ModelConfig(model="keras_hub", preset=preset)), name="causal_lm")
    served = export_and_check_against_the_library(policy, KerasHubTokenizer(preset), tmp_path,
                                                  ["def f(x):", "import os\n", "x"],
                                                  ["def f(x):\n    return x\n", "é"], NEW)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_tokens exceed the model.{1,2}s 63 positions"):
        served.signatures["generate"](prompts=tf.constant(["x" * 60]), max_new_tokens=tf.constant(NEW),
                                      temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
                                      seed=tf.constant(0))


def test_preset_tokenizer_tokenizes_data_as_the_graph_does(preset):
    tokenizer = KerasHubTokenizer(preset)
    texts = ["def f(x):\n    return x\n", "a  b", "x\n\n y", "é", ""]
    in_graph = tf.function(lambda t: tokenizer.encode_tf(t, add_bos=True).to_tensor(-1))(tf.constant(texts)).numpy()
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_bos=True)
        np.testing.assert_array_equal(in_graph[row][:len(ids)], ids)
        assert (in_graph[row][len(ids):] == -1).all()


def write_yes_no_pairs(path, count=48):
    """Pairwise records a model tells apart by one word: the chosen completion says "yes", the rejected "no"."""
    records = [{"prompt": f"item {i}: ", "chosen": f"x{i} yes", "rejected": f"x{i} no",
                "split": "validation" if i % 4 == 0 else "train"} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_preference_rows_read_the_presets_tokenizer_and_its_chat_markers(tmp_path, preset):
    tokenizer = KerasHubTokenizer(preset)
    data = load_preferences(write_yes_no_pairs(tmp_path / "pairs.jsonl"))
    arrays = preference_arrays(data.split("train"), 32, tokenizer=tokenizer)
    row, completion = arrays["token_ids"][0, 0], arrays["completion_mask"][0, 0]
    assert row[0] == tokenizer.bos_id and tokenizer.decode(row[completion]) == "x1 yes"
    assert tokenizer.decode(row[arrays["padding_mask"][0, 0]]) == "item 1: x1 yes"
    ids, start = encode_completion((("user", "hi"),), "hello", 32, tokenizer)
    user, assistant, end = (tokenizer.control_tokens[name] for name in ("<|user|>", "<|assistant|>", "<|end|>"))
    assert ids.tolist() == [tokenizer.bos_id, user, *tokenizer.encode("hi"), end, assistant,
                            *tokenizer.encode("hello"), end]
    assert tokenizer.decode(ids[start:]) == "hello"
    with pytest.raises(UserError, match="--code_structure reads bytes"):
        tiny_config(tmp_path / "rm", "p.jsonl", model="keras_hub", preset=preset, objective="reward_model",
                    code_structure=True).validate()


@pytest.mark.slow
def test_a_preset_reward_model_with_lora_learns_pairs_and_serves_them(tmp_path, preset):
    import tensorflow_text  # noqa: F401 (registers the ops of keras-hub's in-graph tokenizer; optional, heavy)

    pairs = write_yes_no_pairs(tmp_path / "pairs.jsonl")
    config = tiny_config(tmp_path / "rm", pairs, model="keras_hub", preset=preset, lora_rank=2,
                         objective="reward_model", train_steps=30, learning_rate=1e-2)
    config.runtime.export = True
    result = train(config, show_progress=False)
    assert result["validation_accuracy"] >= 0.9, result
    reward = RewardModelReward(str(tmp_path / "rm"))
    assert isinstance(reward.tokenizer, KerasHubTokenizer)
    prompts = ["item 44: ", "item 60: "]  # as the held-out records
    chosen, rejected = reward(prompts, ["x44 yes", "x60 yes"]), reward(prompts, ["x44 no", "x60 no"])
    assert np.all(chosen > rejected), (chosen, rejected)
    # The export's `reward` signature tokenizes with the preset's tokenizer in the graph, cut as in training.
    prompts, completions = ["item 44: ", "", "item 3: " * 20], ["x44 no", "x1  yes", "a  b\n\n yes"]
    served = tf.saved_model.load(result["export"]).signatures["reward"](
        prompts=tf.constant(prompts), completions=tf.constant(completions))["reward"].numpy()
    np.testing.assert_allclose(served, reward(prompts, completions), rtol=1e-4, atol=1e-4)
    # evaluate.py with its default flags (which sample language models) measures a preset reward model's accuracy.
    finished = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "rm")])
    assert finished.returncode == 0, finished.stderr
    assert json.load(open(tmp_path / "rm" / "eval" / "metrics.json"))["metrics"]["accuracy"] >= 0.9
    base = {v.path: v.numpy() for v in preset_backbone(preset).weights}
    for variable in reward.model.backbone.weights:
        if not is_lora_weight(variable):
            np.testing.assert_array_equal(variable.numpy(), base[variable.path], err_msg=variable.path)


@pytest.mark.slow
def test_dpo_with_lora_on_a_preset_learns_pairs_and_keeps_the_base_weights(tmp_path, preset):
    records = [{"prompt": f"item {i}: ", "completion": f"x{i} maybe"} for i in range(16)]
    sft_data = tmp_path / "sft.jsonl"
    sft_data.write_text("".join(json.dumps(r) + "\n" for r in records))
    sft = tiny_config(tmp_path / "sft", str(sft_data), model="keras_hub", preset=preset, lora_rank=2,
                      objective="sft", train_steps=2)
    train(sft, show_progress=False)
    pairs = write_yes_no_pairs(tmp_path / "pairs.jsonl")
    config = tiny_config(tmp_path / "dpo", pairs, objective="dpo", init_from=str(tmp_path / "sft"), train_steps=30,
                         learning_rate=1e-2)
    result = train(config, show_progress=False)
    assert result["validation_reward_accuracy"] >= 0.9 and result["validation_reward_margin"] > 0, result
    assert (tmp_path / "dpo" / "reference_logprobs.npz").exists()
    _, trained, _ = load_run(str(tmp_path / "dpo"))
    _, reference, _ = load_run(str(tmp_path / "sft"))
    base = {v.path: v.numpy() for v in preset_backbone(preset).weights}
    start = {v.path: v.numpy() for v in reference.backbone.weights}
    changed = 0
    for variable in trained.backbone.weights:
        if is_lora_weight(variable):
            changed += bool(np.any(variable.numpy() != start[variable.path]))
        else:
            np.testing.assert_array_equal(variable.numpy(), base[variable.path], err_msg=variable.path)
    assert changed == 8  # every adapter factor moved on from the SFT run's
    # evaluate.py compares the policy with its reference (the SFT run) on held-out prompts, in the preset's tokens.
    finished = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "dpo"), "--max_new_tokens", "8"])
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.load(open(tmp_path / "dpo" / "eval" / "metrics.json"))["metrics"]
    assert report["reward_accuracy"] >= 0.9 and report["prompts"] > 0 and report["kl_to_reference"] != 0

    ipo = tiny_config(tmp_path / "ipo", pairs, objective="dpo", init_from=str(tmp_path / "sft"), train_steps=2,
                      ipo=True)
    assert np.isfinite(train(ipo, show_progress=False)["loss"])


@pytest.mark.slow
def test_a_reward_model_puts_new_adapters_on_a_preset_fine_tuned_in_full(tmp_path, preset):
    records = [{"prompt": f"item {i}: ", "completion": f"x{i} maybe"} for i in range(16)]
    sft_data = tmp_path / "sft.jsonl"
    sft_data.write_text("".join(json.dumps(r) + "\n" for r in records))
    train(tiny_config(tmp_path / "sft", str(sft_data), model="keras_hub", preset=preset, objective="sft",
                      train_steps=2, learning_rate=1e-2), show_progress=False)
    pairs = write_yes_no_pairs(tmp_path / "pairs.jsonl")
    config = tiny_config(tmp_path / "rm", pairs, objective="reward_model", init_from=str(tmp_path / "sft"),
                         lora_rank=2, train_steps=3)
    assert inapplicable_flags(config, ["lora_rank", "preset"]) == [
        ("preset", f"the architecture comes from --init_from {tmp_path / 'sft'}")]
    train(config, show_progress=False)
    assert json.load(open(tmp_path / "rm" / "config.json"))["model"]["lora_rank"] == 2
    _, trained, _ = load_run(str(tmp_path / "rm"))
    _, sft, _ = load_run(str(tmp_path / "sft"))
    start = {v.path: v.numpy() for v in sft.backbone.weights}
    preset_weights = {v.path: v.numpy() for v in preset_backbone(preset).weights}
    assert any(np.any(start[p] != preset_weights[p]) for p in start)  # the SFT run changed the preset
    for variable in trained.backbone.weights:
        if not is_lora_weight(variable):
            np.testing.assert_array_equal(variable.numpy(), start[variable.path], err_msg=variable.path)
    with pytest.raises(UserError, match="trained rank-2 adapters, which this run continues"):
        resolve_config(tiny_config(tmp_path / "rm4", pairs, objective="reward_model", init_from=str(tmp_path / "rm"),
                                   lora_rank=4))
