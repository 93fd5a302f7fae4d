"""The int8 export: a quantized copy served with the float export's signatures and errors, nothing
float left of its int8 weights, the float model untouched, and `--quantize` on the command line."""
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tfpref.cli import evaluate_main, train_main
from tfpref.config import ModelConfig
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.models import CausalLM, build_model
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.quantization import quantized_copy
from tfpref.models.sampling import Sampler, left_pad
from tfpref.training.export import export_model

from helpers import TINY_FLAGS, run_cli_in_process, write_tiny_corpus
from test_export import CONTENTS, NEW, PROMPTS, ROLES, TEXTS, chat_call, generate_call, serve

TOKENIZER = ByteTokenizer()
# How far an int8 token log-prob may be from the float one: per-channel int8 weights move a
# token's log-prob by about 0.01 on these models (and the held-out perplexity of the benchmark's
# trained model by 0.01%).
TOKEN_ATOL = 0.05


def peaked_model(name, seed=5):
    """A tiny language model whose matrices are drawn at the scale training leaves them (std
    1/sqrt(fan-in)) rather than at initialisation's 0.02, so that its predictions are far from
    uniform and quantization error shows in them."""
    model = CausalLM(build_model(ModelConfig(model=name, d_model=32, num_layers=2, num_heads=2, ff_dim=64),
                                 seed=seed))
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if len(variable.shape) == 2:
            variable.assign(rng.normal(0, variable.shape[0] ** -0.5, variable.shape).astype(np.float32))
    return model


def padded(texts):
    encoded = [TOKENIZER.encode(t, add_bos=True) for t in texts]
    width = max(map(len, encoded))
    ids = np.array([np.pad(e, (0, width - len(e))) for e in encoded])
    return ids, ids != 0


def answers_in_process(path, calls):
    """What `serve` answers to `calls`, from the SavedModel at `path` loaded in this process (NumPy
    arrays; an InvalidArgumentError as {"error": its message})."""
    signatures = tf.saved_model.load(path).signatures
    answers = {}
    for name, (signature, kwargs) in calls.items():
        tensors = {k: tf.constant(v, dtype=tf.string if isinstance(v, list) else None) for k, v in kwargs.items()}
        try:
            answers[name] = {k: v.numpy() for k, v in signatures[signature](**tensors).items()}
        except tf.errors.InvalidArgumentError as e:
            answers[name] = {"error": e.message}
    return answers


def test_the_copy_is_int8_where_keras_can_and_the_float_model_is_untouched():
    model = peaked_model("transformer")
    before = {v.path: v.numpy() for v in model.weights}
    ids, mask = padded(TEXTS)
    float_logprobs = sequence_logprobs(model, ids, mask).numpy()

    quantized = quantized_copy(model)
    for variable in model.weights:  # the float model: the same variables, bit for bit, and still float
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)
    assert not any(v.dtype == "int8" for v in model.weights)
    np.testing.assert_array_equal(sequence_logprobs(model, ids, mask).numpy(), float_logprobs)

    int8 = {v.path for v in quantized.model.weights if v.dtype == "int8"}
    blocks = [f"transformer/block_{i}/{layer}/kernel" for i in range(2)
              for layer in ("attention/qkv", "attention/out", "mlp_in", "mlp_out")]
    assert int8 == {"transformer/embedding/embeddings", *blocks}
    float_shapes = {tuple(v.shape) for v in quantized.model.weights if v.dtype == "float32"}
    assert not float_shapes & {tuple(v.shape) for v in quantized.model.weights if v.dtype == "int8"}
    report = quantized.report
    assert report.float_matrices == [] and report.bytes / report.float_bytes < 0.35
    difference = np.abs(sequence_logprobs(quantized.model, ids, mask).numpy() - float_logprobs)
    assert 0 < difference.max() < TOKEN_ATOL


def test_an_lstm_keeps_its_recurrent_weights_float_and_says_so():
    model = peaked_model("lstm")
    quantized = quantized_copy(model)
    report = quantized.report
    left = [path for path, _ in report.float_matrices]
    assert sorted(left) == sorted(f"lstm/lstm_{i}/lstm_cell/{kernel}" for i in range(2)
                                  for kernel in ("kernel", "recurrent_kernel"))
    assert "left in float: lstm/lstm_" in str(report) and "and 1 more" in str(report)
    assert report.int8_parameters < report.float_parameters  # the LSTM's weights are most of the model
    ids, mask = padded(TEXTS)
    difference = sequence_logprobs(quantized.model, ids, mask).numpy() - sequence_logprobs(model, ids, mask).numpy()
    assert np.abs(difference).max() < TOKEN_ATOL


@pytest.mark.slow
def test_the_int8_export_serves_without_tfpref_like_the_float_one(tmp_path):
    model = peaked_model("transformer")
    # Without XLA: what is tested is the int8 graph, not its compilation (tests/test_export.py tests that).
    float_path = export_model(model, str(tmp_path), step=4, jit_compile=False)
    int8_path = export_model(model, str(tmp_path), step=4, quantize="int8", jit_compile=False)
    assert int8_path == str(tmp_path / "export-int8" / "4")
    assert sorted(os.listdir(tmp_path)) == ["export", "export-int8"]

    calls = {"greedy": generate_call(PROMPTS, 0.0), "score": ["score", {"texts": TEXTS}],
             "chat": chat_call(ROLES, CONTENTS, 0.9, seed=3),
             "empty_batch": ["score", {"texts": []}], "empty_text": ["score", {"texts": ["ok", ""]}],
             "too_long": ["score", {"texts": ["x" * 3000]}], "too_many_new": generate_call(["abc"], 0.0, new=2046),
             "no_new_tokens": generate_call(["abc"], 0.0, new=0),
             "bad_role": chat_call([["user", "bot"]], [["a", "b"]], 0.0)}
    served, float_served = serve(int8_path, calls), answers_in_process(float_path, calls)

    # Bad input: the float export's errors, word for word (but the numbers TensorFlow gives its ops).
    for call in ("empty_batch", "empty_text", "too_long", "too_many_new", "no_new_tokens", "bad_role"):
        assert re.sub(r"\d+", "N", served[call]["error"]) == re.sub(r"\d+", "N", float_served[call]["error"]), call

    # score: near the float export, and exactly the library's int8 copy.
    assert np.shape(served["score"]["token_logprobs"]) == float_served["score"]["token_logprobs"].shape
    np.testing.assert_allclose(served["score"]["token_logprobs"], float_served["score"]["token_logprobs"],
                               atol=TOKEN_ATOL)
    assert served["score"]["num_tokens"] == float_served["score"]["num_tokens"].tolist()
    quantized = quantized_copy(model)
    ids, mask = padded(TEXTS)
    np.testing.assert_allclose(served["score"]["token_logprobs"],
                               sequence_logprobs(quantized.model, ids, mask).numpy(), atol=1e-4)

    # generate and chat: the library's sampler on the int8 copy.
    expected = Sampler(quantized.model, NEW, jit_compile=False)(
        *left_pad([TOKENIZER.encode(p, add_bos=True) for p in PROMPTS]), temperature=0.0)
    assert served["greedy"]["completions"] == [TOKENIZER.decode(t[m]) for t, m in zip(expected["tokens"],
                                                                                    expected["mask"])]
    np.testing.assert_allclose(served["greedy"]["logprob"], expected["logprobs"].sum(1), atol=1e-4)
    assert len(served["chat"]["completions"]) == len(ROLES)

    # Only int8 kernels, their scales and the float rest are saved: no float copy of a kernel.
    variables = tf.saved_model.load(int8_path).model_variables
    int8 = [v for v in variables if v.dtype == tf.int8]
    floats = [v for v in variables if v.dtype.is_floating]
    assert len(int8) == 9  # the embedding table and 4 kernels in each of 2 blocks
    assert not {tuple(v.shape) for v in floats} & {tuple(v.shape) for v in int8}
    assert sum(int(np.prod(v.shape)) for v in int8) == quantized.report.int8_parameters
    assert sum(int(np.prod(v.shape)) for v in floats) == quantized.report.float_parameters


@pytest.mark.slow
def test_evaluate_export_quantize_writes_export_int8_beside_the_float_export(tmp_path):
    corpus = write_tiny_corpus(str(tmp_path))
    run_dir = tmp_path / "run"
    done = run_cli_in_process(train_main, [*TINY_FLAGS, "--data", corpus, "--train_steps", "2",
                                           "--model_dir", str(run_dir)])
    assert done.returncode == 0, done.stderr
    done = run_cli_in_process(evaluate_main,
                              ["--model_dir", str(run_dir), "--export", "--quantize", "int8", "--no_xla"])
    assert done.returncode == 0, done.stderr
    assert f"SavedModel: {run_dir / 'export-int8' / '2'}" in done.stdout
    assert "int8: " in done.stdout and "% of float32's" in done.stdout  # what it holds, in one line
    assert not (run_dir / "export").exists()  # only what was asked for
    signatures = tf.saved_model.load(str(run_dir / "export-int8" / "2")).signatures
    assert sorted(signatures) == ["chat", "generate", "score"]


@pytest.mark.parametrize("flags, message", [
    (["--quantize", "int8"], "error: --quantize int8 needs --export: it quantizes the exported SavedModel"),
    (["--export", "--quantize", "int4"], "error: argument --quantize: invalid choice: 'int4' (choose from 'int8')"),
])
def test_quantize_flag_errors_are_one_line(tmp_path, flags, message):
    done = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "run"), *flags])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [message + (" (see --help)" if "argument" in message else "")]



@pytest.fixture(scope="module")
def gpt2_preset(tmp_path_factory):
    from keras_hub_presets import save_tiny_gpt2_preset

    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


def test_a_lora_gpt2_preset_is_int8_but_its_position_table_with_its_adapters_folded_in(gpt2_preset):
    from test_keras_hub_lora_export import trained_lora_policy

    policy = trained_lora_policy(gpt2_preset)
    quantized = quantized_copy(policy)
    assert len(quantized.unread) == 8  # query and value adapters of 2 blocks, folded into the int8 kernels
    int8 = [v.path for v in quantized.model.weights if v.dtype == "int8"]
    assert len(int8) == 2 * 6 + 1 and "token_embedding/embeddings" in int8  # q, k, v, out, ffn in and out
    assert [path for path, _ in quantized.report.float_matrices] == ["position_embedding/embeddings"]
    assert quantized.report.bytes < 0.4 * quantized.report.float_bytes
    ids = np.array([[0, 5, 80, 99, 7, 3, 12, 40]], np.int32)
    mask = np.ones_like(ids, bool)
    np.testing.assert_allclose(sequence_logprobs(quantized.model, ids, mask).numpy(),
                               sequence_logprobs(policy, ids, mask).numpy(), atol=TOKEN_ATOL)


@pytest.mark.slow
def test_a_lora_gpt2_preset_serves_int8_without_its_adapters(tmp_path, gpt2_preset):
    import tensorflow_text  # noqa: F401 (registers the ops of keras-hub's in-graph tokenizer; optional, heavy)
    from test_keras_hub_lora_export import trained_lora_policy
    from tfpref.data.tokenizers import KerasHubTokenizer

    policy, tokenizer = trained_lora_policy(gpt2_preset), KerasHubTokenizer(gpt2_preset)
    path = export_model(policy, str(tmp_path), step=1, seq_len=32, tokenizer=tokenizer, quantize="int8",
                        jit_compile=False)
    served = tf.saved_model.load(path)
    assert sorted(served.signatures) == ["chat", "generate", "score"]
    assert not any("lora_kernel" in v.name for v in served.model_variables)
    assert sum(v.dtype == tf.int8 for v in served.model_variables) == 2 * 6 + 1
    texts = ["def f(x):\n    return x\n", "import os"]
    scored = served.signatures["score"](texts=tf.constant(texts))["token_logprobs"].numpy()
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_bos=True)[None]
        adapted = sequence_logprobs(policy, ids, np.ones_like(ids, bool)).numpy()[0]
        np.testing.assert_allclose(scored[row, :len(adapted)], adapted, atol=TOKEN_ATOL)
