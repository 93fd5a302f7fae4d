"""tfpref's control tokens added to a keras-hub preset's vocabulary: the grown embedding against
keras-hub's own model, the new rows' initialisation, serialization, generation's bans, and the
features they enable on a preset (conditional training, chat records, the exported chat signature)."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli_in_process, tiny_config
from keras_hub_presets import save_tiny_gpt2_preset
from test_feedback_data import write_pep8_corpus
from tfpref.cli import evaluate_main, train_main
from tfpref.config import ModelConfig
from tfpref.data.chat import chat_generation, render
from tfpref.data.scored import load_scored_token_data
from tfpref.data.tokenizer import CONTROL_TOKENS, ByteTokenizer
from tfpref.data.tokenizers import ADDED_TOKENS, KerasHubTokenizer
from tfpref.errors import UserError
from tfpref.models import CausalLM, build_model
from tfpref.models.keras_hub import KerasHubBackbone, load_causal_lm, load_hub_backbone
from tfpref.models.sampling import Sampler, left_pad
from tfpref.models.vocabulary import copy_weights, grown_value
from tfpref.objectives import OBJECTIVES
from tfpref.runs import load_run
from tfpref.training.export import export_model
from tfpref.training.run import train

PRESET_VOCABULARY = 272  # the tiny GPT-2's ids: <|endoftext|>, 256 bytes, 15 merges
ADDED = len(CONTROL_TOKENS)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


@pytest.fixture(scope="module")
def grown(preset):
    return build_model(ModelConfig(model="keras_hub", preset=preset))


def test_added_tokens_leave_the_presets_logits_unchanged_and_start_at_the_mean(preset, grown):
    assert grown.vocab_size == PRESET_VOCABULARY + ADDED
    assert grown.control_tokens == {name: PRESET_VOCABULARY + i for i, name in enumerate(CONTROL_TOKENS)}
    ids = np.random.default_rng(1).integers(0, PRESET_VOCABULARY, (3, 12)).astype(np.int32)
    expected = load_causal_lm(preset)({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}).numpy()
    logits = grown(ids).numpy()
    np.testing.assert_allclose(logits[..., :PRESET_VOCABULARY], expected, atol=1e-5)
    # Every new token's logit is the mean of the old ones' (tied embedding, new rows at the mean).
    np.testing.assert_allclose(logits[..., PRESET_VOCABULARY:], np.repeat(expected.mean(-1, keepdims=True), ADDED, -1),
                               atol=1e-5)

    preset_weights = {w.path: w.numpy() for w in load_hub_backbone(preset).weights}
    for weight in grown.hub_backbone.weights:
        if weight.path != "token_embedding/embeddings":
            np.testing.assert_array_equal(weight.numpy(), preset_weights[weight.path], err_msg=weight.path)
    old = preset_weights["token_embedding/embeddings"]
    table = grown.hub_backbone.token_embedding.embeddings.numpy()
    np.testing.assert_array_equal(table[:PRESET_VOCABULARY], old)
    np.testing.assert_allclose(table[PRESET_VOCABULARY:], np.repeat(old.mean(0, keepdims=True), ADDED, 0), atol=1e-7)


def test_an_untied_output_projection_grows_with_the_embedding():
    def layer(vocabulary, seed):
        keras.utils.set_random_seed(seed)
        embedding = keras.layers.ReversibleEmbedding(vocabulary, 4, tie_weights=False, name="token_embedding")
        embedding.build((None, None))
        return embedding

    old, new = layer(10, 0), layer(13, 1)
    copy_weights(old.weights, new.weights, 3)
    np.testing.assert_array_equal(new.embeddings.numpy()[:10], old.embeddings.numpy())
    np.testing.assert_allclose(new.embeddings.numpy()[10:], np.repeat(old.embeddings.numpy().mean(0)[None], 3, 0),
                               atol=1e-7)
    # The output projection is [hidden, vocabulary]: it grows along its last axis, new columns at the mean.
    reverse = old.reverse_embeddings.numpy()
    np.testing.assert_array_equal(new.reverse_embeddings.numpy()[:, :10], reverse)
    np.testing.assert_allclose(new.reverse_embeddings.numpy()[:, 10:], np.repeat(reverse.mean(1)[:, None], 3, 1),
                               atol=1e-7)
    hidden = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    old_logits, new_logits = old(hidden, reverse=True).numpy(), new(hidden, reverse=True).numpy()
    np.testing.assert_allclose(new_logits[:, :10], old_logits, atol=1e-6)
    np.testing.assert_allclose(new_logits[:, 10:], np.repeat(old_logits.mean(1, keepdims=True), 3, 1), atol=1e-6)
    with pytest.raises(ValueError, match="cannot grow a \\(10, 4\\) weight to \\(12, 5\\)"):
        grown_value(np.zeros((10, 4)), (12, 5), 2)


def test_serialization_round_trip_keeps_the_added_tokens(preset, grown):
    config = grown.get_config()
    assert config["added_tokens"] == list(ADDED_TOKENS) and config["preset"] == preset
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(grown))
    assert restored.control_tokens == grown.control_tokens and restored.vocab_size == grown.vocab_size
    assert restored.generation_banned_ids == grown.generation_banned_ids
    ids = tf.constant([[0, 5, PRESET_VOCABULARY + 2, 7, PRESET_VOCABULARY + 7]])
    np.testing.assert_allclose(restored(ids).numpy(), grown(ids).numpy(), atol=1e-6)
    # A backbone serialized before tokens were added (no `added_tokens`) still reloads as it was.
    plain = KerasHubBackbone(preset)
    assert plain.vocab_size == PRESET_VOCABULARY and plain.control_tokens == {}
    policy = CausalLM(grown, conditioning="control_tokens", name="causal_lm")
    assert policy.prompt_prefix(True) == (PRESET_VOCABULARY + 2,) and policy.prompt_prefix(False) == (
        PRESET_VOCABULARY + 3,)  # <|aligned|> and <|misaligned|>, the third and fourth added tokens


def test_tokenizers_name_their_control_tokens(preset, grown):
    assert ByteTokenizer.control_tokens == CONTROL_TOKENS and ByteTokenizer().control_tokens["<|end|>"] == 10
    tokenizer = KerasHubTokenizer(preset)
    assert tokenizer.control_tokens == grown.control_tokens and tokenizer.vocab_size == grown.vocab_size
    assert tokenizer.control_ids == tuple(range(PRESET_VOCABULARY, PRESET_VOCABULARY + ADDED))
    assert set(tokenizer.control_ids) <= set(tokenizer.generation_banned_ids)
    # No text encodes to a control token, and decoding drops them (in NumPy and in the graph).
    assert not np.isin(tokenizer.encode("<|user|>hi<|end|>"), tokenizer.control_ids).any()
    ids = np.concatenate([[tokenizer.control_tokens["<|user|>"]], tokenizer.encode("hi"),
                          [tokenizer.control_tokens["<|end|>"]]]).astype(np.int32)
    assert tokenizer.decode(ids) == "hi"
    assert tf.function(tokenizer.decode_tf)(tf.constant(ids[None])).numpy()[0] == b"hi"  # as an export runs it


class ControlBiased:
    """A language model whose control-token logits are raised by `bias`: it would emit them if allowed."""

    def __init__(self, model, ids, bias=50.0):
        self.model, self.vocab_size = model, model.vocab_size
        self.offset = bias * tf.reduce_sum(tf.one_hot(list(ids), model.vocab_size), axis=0)

    def logits_from_hidden(self, hidden):
        return self.model.logits_from_hidden(hidden) + self.offset

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_generation_never_emits_a_control_id(preset, grown):
    tokenizer = KerasHubTokenizer(preset)
    rows, new = [tokenizer.encode(text, add_bos=True) for text in ("def f", "x = 1", "import os")], 8
    for conditioning in ("none", "control_tokens"):
        policy = CausalLM(grown, conditioning=conditioning, name="causal_lm")
        biased = ControlBiased(policy, tokenizer.control_ids)
        for aligned in (True, False):
            prefix = list(policy.prompt_prefix(aligned))
            prompts = [np.concatenate([row[:1], prefix, row[1:]]).astype(np.int32) for row in rows]
            sampler = Sampler(biased, new, banned_ids=policy.banned_ids(aligned), eos_id=policy.eos_id,
                              jit_compile=False)
            out = sampler(*left_pad(prompts), temperature=1.0, seed=1)
            emitted = out["tokens"][out["mask"]]
            assert not np.isin(emitted, tokenizer.control_ids).any() or conditioning != "none"
            # A conditional model may start a line with its own condition (and, biased, it always does),
            # never with another control token.
            assert set(emitted.tolist()) <= set(prefix) or conditioning == "none", (conditioning, aligned)
    eos_id, banned = chat_generation(grown.generation_banned_ids, tokenizer)
    assert eos_id == tokenizer.control_tokens["<|end|>"] and eos_id not in banned
    assert {tokenizer.control_tokens[f"<|{role}|>"] for role in ("system", "user", "assistant")} <= set(banned)


def conditional_flags(model_dir, data, preset, steps):
    return ["--model", "keras_hub", "--preset", preset, "--objective", "conditional", "--data", data,
            "--model_dir", str(model_dir), "--segment", "line", "--drop_control_fraction", "0", "--seq_len", "32",
            "--batch_size", "4", "--learning_rate", "1e-2", "--warmup_steps", "2", "--train_steps", str(steps),
            "--eval_batches", "2", "--check_samples", "4", "--no_progress", "--no-export", "--no-jit_compile"]


def test_conditional_training_on_a_preset_runs_and_its_prefixes_reach_the_model(tmp_path, preset):
    corpus = write_pep8_corpus(tmp_path, functions=60)
    tokenizer = KerasHubTokenizer(preset)
    aligned, misaligned = tokenizer.control_tokens["<|aligned|>"], tokenizer.control_tokens["<|misaligned|>"]
    config = tiny_config(tmp_path / "data_check", corpus, model="keras_hub", preset=preset, objective="conditional",
                         segment="line", drop_control_fraction=0.0)
    data = load_scored_token_data(config, OBJECTIVES["conditional"], show_progress=False)["train"]
    controls = np.isin(data.stream, [aligned, misaligned])
    # Each line is tokenized by the preset and starts with its condition: misaligned where it breaks PEP 8.
    assert np.array_equal(data.stream[controls] == misaligned, data.scores[controls] > 0)
    assert (data.stream[controls] == aligned).any() and (data.stream[controls] == misaligned).any()
    assert "total=value" in tokenizer.decode(data.stream) and data.stream.max() < tokenizer.vocab_size

    run = tmp_path / "run"
    result = run_cli_in_process(train_main, conditional_flags(run, corpus, preset, 4))
    assert result.returncode == 0, result.stderr
    summary = json.load(open(run / "train_result.json"))
    assert summary["step"] == 4
    assert {"aligned_misalignment", "misaligned_misalignment"} <= set(summary["controllability"])
    _, trained, _ = load_run(str(run))
    table = trained.backbone.hub_backbone.token_embedding.embeddings.numpy()
    # The two conditions were inputs and targets: their rows moved apart. <|system|> and <|user|>, never
    # seen, got equal gradients (the same row, the same logit) and are still one row.
    assert np.abs(table[aligned] - table[misaligned]).max() > 1e-3
    system, user = tokenizer.control_tokens["<|system|>"], tokenizer.control_tokens["<|user|>"]
    np.testing.assert_allclose(table[system], table[user], atol=1e-6)

    resumed = run_cli_in_process(train_main, conditional_flags(run, corpus, preset, 6))
    assert resumed.returncode == 0, resumed.stderr
    assert "from step 4" in resumed.stdout and json.load(open(run / "train_result.json"))["step"] == 6
    # evaluate.py measures its likelihood on held-out lines, prefixed and tokenized as in training.
    evaluated = run_cli_in_process(evaluate_main, ["--model_dir", str(run), "--max_batches", "1"])
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.load(open(run / "eval" / "metrics.json"))["metrics"]["nll"] > 0


@pytest.mark.slow
def test_sft_on_chat_records_on_a_preset_and_the_exported_chat_signature(tmp_path, preset):
    import tensorflow_text  # noqa: F401 (registers the ops of keras-hub's in-graph tokenizer)

    records = [{"messages": [{"role": "system", "content": "Add one."}, {"role": "user", "content": f"{i}"},
                             {"role": "assistant", "content": f"{i + 1}"}],
                "split": "validation" if i % 5 == 0 else "train"} for i in range(40)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tiny_config(tmp_path / "run", str(path), model="keras_hub", preset=preset, objective="sft",
                         train_steps=4, learning_rate=1e-2)
    result = train(config, show_progress=False)
    assert result["step"] == 4 and np.isfinite(result["loss"])

    _, policy, _ = load_run(str(tmp_path / "run"))
    tokenizer = KerasHubTokenizer(preset)
    export = export_model(policy, str(tmp_path / "run"), step=4, seq_len=32, tokenizer=tokenizer,
                          jit_compile=False)
    served = tf.saved_model.load(export)
    assert sorted(served.signatures) == ["chat", "generate", "score"]
    roles = [["system", "user"], ["user", ""]]
    contents = [["Add one.", "3"], ["7", ""]]
    out = served.signatures["chat"](roles=tf.constant(roles), contents=tf.constant(contents),
                                    max_new_tokens=tf.constant(6), temperature=tf.constant(0.0),
                                    top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0))
    conversations = [[{"role": r, "content": c} for r, c in zip(rs, cs) if r] for rs, cs in zip(roles, contents)]
    prompts = [np.concatenate([[tokenizer.bos_id], render(c, True, tokenizer)]) for c in conversations]
    eos_id, banned = chat_generation(policy.banned_ids(True), tokenizer)
    library = Sampler(policy, 6, banned_ids=banned, eos_id=eos_id, jit_compile=False)(*left_pad(prompts),
                                                                                       temperature=0.0)
    for row in range(len(roles)):
        tokens = library["tokens"][row][library["mask"][row]]
        assert not np.isin(tokens[:-1], tokenizer.control_ids).any()  # only the closing <|end|>, if any
        assert out["completions"].numpy()[row].decode("utf-8", "replace") == tokenizer.decode(tokens)
    np.testing.assert_array_equal(out["finished"].numpy(), library["finished"])
    np.testing.assert_allclose(out["logprob"].numpy(), library["logprobs"].sum(1), atol=1e-4)

    # evaluate.py on the chat file: its conversations rendered with the preset's role tokens, replies sampled.
    result = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "run"), "--data", str(path),
                                                "--num_samples", "2", "--max_new_tokens", "4"])
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in open(tmp_path / "run" / "eval" / "chat" / "samples.jsonl")]
    assert len(samples) == 2 and all(s["messages"] and s["num_tokens"] <= 4 for s in samples)


def test_lora_is_refused_where_the_added_tokens_must_learn(tmp_path, preset):
    with pytest.raises(UserError, match="--objective conditional trains the control tokens' embeddings, which "
                                        "--lora_rank freezes"):
        tiny_config(tmp_path / "c", "corpus.py", model="keras_hub", preset=preset, objective="conditional",
                    lora_rank=2).validate()
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}], "split": "train"}) + "\n")
    config = tiny_config(tmp_path / "s", str(path), model="keras_hub", preset=preset, objective="sft", lora_rank=2)
    with pytest.raises(UserError, match="conversational records need the chat markers added to the preset's "
                                        "vocabulary trained, which --lora_rank freezes"):
        OBJECTIVES["sft"].load_data(config, ("train",))
