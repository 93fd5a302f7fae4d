"""--tokenizer bpe / unigram: lossless on any text, the same ids in Python and in a TF graph, saved
with the run, served by an export, and bad --tokenizer / --vocab_size values are one-line errors."""
import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from tfpref.cli import evaluate_main, train_main
from tfpref.config import ModelConfig, RunConfig
from tfpref.data.subword import SubwordTokenizer
from tfpref.data.tokenizer import CONTROL_IDS, CONTROL_TOKENS, NUM_SPECIAL
from tfpref.data.tokenizers import tokenizer_dir, tokenizer_for
from tfpref.models import CausalLM, build_model
from tfpref.models.logprobs import sequence_logprobs
from tfpref.training.export import export_model

from helpers import TINY_FLAGS, run_cli_in_process, train_in_process, write_tiny_corpus
from test_feedback_data import write_pep8_corpus

KINDS = ("bpe", "unigram")
TRICKY = ["", "\t\tx = 1\r\n", "   runs   of  spaces ", "\u2581 lower one eighth \u2581\u2581", "emoji 😀👍🏽",
          "nul \x00 and \x7f", "literal <|aligned|> and <|misaligned|>", "é€ utf-8 ✓ 中文",
          "def function_7(value):\n    total = value * 0 + 7\n    return total\n\n"]
run_train_in_process = functools.partial(run_cli_in_process, train_main)


def corpus_texts():
    return [f"def function_{i}(value):\n    total = value * {i % 7} + {i}\n    return total\n\n" for i in range(200)]


@pytest.fixture(scope="module", params=KINDS)
def tokenizer(request):
    return SubwordTokenizer.train(corpus_texts(), request.param, 300)


# ---- the tokenizer ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_any_text_round_trips(kind, text):
    tokenizer = _trained(kind)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert ids.dtype == np.int32 and (ids >= NUM_SPECIAL).all() and (ids != tokenizer.unk_id).all()
    assert tokenizer.byte_lengths()[ids].sum() == len(text.encode("utf-8"))


@functools.lru_cache(maxsize=None)
def _trained(kind):  # Hypothesis runs a test many times: one vocabulary per kind
    return SubwordTokenizer.train(corpus_texts(), kind, 300)


def test_pieces_are_subwords_and_training_repeats(tokenizer):
    assert tokenizer.vocab_size == NUM_SPECIAL + 300
    text = corpus_texts()[5]
    assert len(tokenizer.encode(text)) < 0.8 * len(text.encode("utf-8"))  # merges were learnt (44 of them)
    again = SubwordTokenizer.train(corpus_texts(), tokenizer.kind, 300)
    assert again.model_proto == tokenizer.model_proto


def test_control_ids_between_pieces_decode_to_the_plain_text(tokenizer):
    parts = ["def f(x):\n", "    return x\n", "<|aligned|> as text\t"]
    encoded = [tokenizer.encode(part) for part in parts]
    ids = np.concatenate([[tokenizer.bos_id, CONTROL_TOKENS["<|aligned|>"]], encoded[0],
                          [CONTROL_TOKENS["<|misaligned|>"]], encoded[1], [CONTROL_IDS[-1]], encoded[2],
                          [tokenizer.eos_id, tokenizer.pad_id]])
    assert tokenizer.decode(ids) == "".join(parts)
    for literal in CONTROL_TOKENS:
        assert not set(tokenizer.encode(literal).tolist()) & set(range(NUM_SPECIAL))
    assert {tokenizer.pad_id, tokenizer.bos_id, tokenizer.unk_id, *CONTROL_IDS} == set(
        tokenizer.generation_banned_ids)


def test_graph_path_gives_the_python_ids_and_round_trips(tokenizer):
    texts = TRICKY + corpus_texts()[:3]
    ragged = tokenizer.encode_tf(tf.constant(texts), add_bos=True, add_eos=True)
    for row, text in zip(ragged.to_list(), texts):
        assert row == tokenizer.encode(text, add_bos=True, add_eos=True).tolist()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(strings):
        ids = tokenizer.encode_tf(strings, add_bos=True)
        return tokenizer.decode_tf(ids.to_tensor(tokenizer.pad_id), tf.sequence_mask(ids.row_lengths()))

    assert [s.decode("utf-8") for s in round_trip(tf.constant(texts)).numpy()] == texts


def test_saved_and_loaded_tokenizer_is_the_same(tokenizer, tmp_path):
    tokenizer.save(str(tmp_path / "tok"))
    loaded = SubwordTokenizer.load(str(tmp_path / "tok"))
    assert (loaded.kind, loaded.model_proto) == (tokenizer.kind, tokenizer.model_proto)
    assert json.loads((tmp_path / "tok" / "tokenizer.json").read_text())["vocab_size"] == 300


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_a_subword_model_has_its_vocabulary_rows_and_bans_and_keeps_them_serialized(kind):
    config = ModelConfig(model=kind, tokenizer="unigram", vocab_size=300, d_model=32, num_layers=2, num_heads=2,
                         ff_dim=64)
    model = build_model(config, seed=0)
    assert model.vocab_size == NUM_SPECIAL + 300 and model.embedding.embeddings.shape[0] == NUM_SPECIAL + 300
    assert set(model.generation_banned_ids) == set(SubwordTokenizer.generation_banned_ids)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert restored.get_config() == model.get_config()
    assert restored.generation_banned_ids == model.generation_banned_ids


# ---- the export, served without tfpref --------------------------------------------------------

# A fresh interpreter without tfpref. The SavedModel's SentencePiece op is registered by
# tensorflow_text: loading fails until it is imported (what a client must do, as for keras-hub's).
CLIENT = r"""
import json, sys
import tensorflow as tf
assert "tfpref" not in sys.modules
try:
    tf.saved_model.load(sys.argv[1])
    loaded_without = True
except Exception:
    loaded_without = False
import tensorflow_text  # registers the SentencepieceOp
served = tf.saved_model.load(sys.argv[1])
out = served.signatures["score"](texts=tf.constant(json.loads(sys.argv[2])))
print(json.dumps({"loaded_without_tensorflow_text": loaded_without,
                  "total_logprob": out["total_logprob"].numpy().tolist(),
                  "num_tokens": out["num_tokens"].numpy().tolist()}))
"""


@pytest.mark.slow
def test_export_with_a_subword_tokenizer_scores_plain_strings_in_a_fresh_process(tmp_path):
    tokenizer = _trained("bpe")
    config = ModelConfig(tokenizer="bpe", vocab_size=300, d_model=32, num_layers=2, num_heads=2, ff_dim=64)
    model = CausalLM(build_model(config, seed=0), "control_tokens")
    path = export_model(model, str(tmp_path), 1, seq_len=32, tokenizer=tokenizer, jit_compile=False)
    texts = TRICKY[1:6]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CLIENT, path, json.dumps(texts)], capture_output=True, text=True,
                          timeout=300, env=env, cwd="/")
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served["loaded_without_tensorflow_text"] is False
    for text, total, count in zip(texts, served["total_logprob"], served["num_tokens"]):
        ids = tokenizer.encode(text, add_bos=True)
        expected = sequence_logprobs(model.backbone, tf.constant(ids[None]), tf.ones([1, len(ids)], bool))
        assert count == len(ids) - 1
        np.testing.assert_allclose(total, float(tf.reduce_sum(expected)), rtol=1e-4, atol=1e-4)


# ---- runs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ("byte",) + KINDS)
def test_conditional_run_trains_resumes_and_evaluates(kind, tmp_path):
    corpus = write_pep8_corpus(tmp_path)  # lines with and without violations: conditional needs both
    run = str(tmp_path / "run")
    flags = [*TINY_FLAGS, "--objective", "conditional", "--data", corpus, "--model_dir", run, "--tokenizer", kind,
             "--eval_every", "2", "--check_samples", "2"]
    if kind != "byte":  # unigram finds fewer pieces than BPE in this repetitive corpus
        flags += ["--vocab_size", "300" if kind == "bpe" else "280"]
    result = train_in_process(flags + ["--train_steps", "2"])
    assert result["step"] == 2 and np.isfinite(result["validation_bits_per_byte"])
    if kind == "byte":  # one token per byte, but EOS (no text) is a target too
        assert not os.path.exists(tokenizer_dir(run)) and 0.9 < result["validation_bytes_per_token"] < 1.0
    else:
        assert result["validation_bytes_per_token"] > 1.2  # a 300-piece vocabulary merges a little
        saved = SubwordTokenizer.load(tokenizer_dir(run))
        assert saved.model_proto == _trained_on_run(run).model_proto
    assert train_in_process(flags + ["--train_steps", "3"])["step"] == 3  # resumed, the vocabulary reused
    assert evaluate_main(["--model_dir", run, "--max_batches", "1", "--num_samples", "2"]) == 0
    with open(os.path.join(run, "eval", "metrics.json"), encoding="utf-8") as f:
        assert np.isfinite(json.load(f)["metrics"]["bits_per_byte"])
    if kind != "byte":  # --init_from takes the source's vocabulary
        child = str(tmp_path / "child")
        train_in_process(["--objective", "mle", "--seq_len", "32", "--batch_size", "4", "--eval_batches", "1",
                          "--no_progress", "--no-export", "--no-jit_compile", "--data", corpus,
                          "--model_dir", child, "--init_from", run, "--train_steps", "1"])
        assert RunConfig.load(os.path.join(child, "config.json")).model.tokenizer == kind
        with open(os.path.join(child, "tokenizer", "sentencepiece.model"), "rb") as f:
            assert f.read() == SubwordTokenizer.load(tokenizer_dir(run)).model_proto


def _trained_on_run(run):
    """The tokenizer the run's config would train afresh (elsewhere): training is deterministic."""
    config = RunConfig.load(os.path.join(run, "config.json"))
    config.model_dir = run + "-elsewhere"
    return tokenizer_for(config)


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--tokenizer", "bpe", "--vocab_size", "100"], "--vocab_size 100"),
    (["--tokenizer", "unigram", "--vocab_size", "100000"], "--vocab_size 100000"),
    (["--tokenizer", "bpe", "--vocab_size", "100000"], "--vocab_size 100000"),
    (["--tokenizer", "wordpiece"], "--tokenizer"),
    (["--vocab_size", "1000"], "--vocab_size"),
    (["--model", "keras_hub", "--preset", "nowhere", "--tokenizer", "bpe"], "--tokenizer"),
])
def test_bad_tokenizer_flags_are_one_line_errors_and_write_nothing(flags, named, tmp_path):
    corpus = write_tiny_corpus(str(tmp_path), functions=40)
    run = tmp_path / "run"
    done = run_train_in_process([*TINY_FLAGS, "--data", corpus, "--model_dir", str(run), *flags])
    assert "Traceback" not in done.stderr and done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], done.stderr
    assert not run.exists()
