"""SavedModel export: loaded in a fresh process without tfpref, it matches the library's results."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfpref.cli import evaluate_main, train_main
from tfpref.config import ModelConfig
from tfpref.data.chat import chat_generation, end_id, render
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.models import CausalLM, Classifier, build_model, build_task_model
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.sampling import Sampler, left_pad
from tfpref.models.tasks import MISALIGNED_SCORE
from tfpref.training.export import export_model

from helpers import TINY_FLAGS, run_cli_in_process, write_tiny_corpus
from serving import conditioned_language_model

TOKENIZER = ByteTokenizer()
PROMPTS = ["def f(x):\n", "import", ""]
TEXTS = ["import os\n", "x = 1", "é€ utf-8 ✓"]
# Two conversations, the first padded with the empty role.
ROLES = [["system", "user", ""], ["user", "assistant", "user"]]
CONTENTS = [["Be brief.", "Hi", ""], ["add 2", "3", "add é"]]
NEW = 10

# Runs in a fresh interpreter: plain TensorFlow, no tfpref on the path, prints one JSON object.
CLIENT = r"""
import json, sys
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
assert "tfpref" not in sys.modules
served = tf.saved_model.load(sys.argv[1])
calls = json.loads(sys.argv[2])
out = {}
for name, (signature, kwargs) in calls.items():
    specs = served.signatures[signature].structured_input_signature[1]
    tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in kwargs.items()}
    try:
        result = served.signatures[signature](**tensors)
        out[name] = {k: (v.numpy().tolist() if v.dtype != tf.string
                         else [s.decode("utf-8", "replace") for s in v.numpy()])
                     for k, v in result.items()}
    except tf.errors.InvalidArgumentError as e:
        out[name] = {"error": e.message}
print(json.dumps(out))
"""


def serve(path, calls):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", CLIENT, path, json.dumps(calls)], capture_output=True,
                          text=True, timeout=300, env=env, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def generate_call(prompts, temperature, seed=0, new=NEW, top_k=0, top_p=1.0, signature="generate", **preference):
    return [signature, {"prompts": prompts, "max_new_tokens": new, "temperature": float(temperature),
                        "top_k": top_k, "top_p": float(top_p), "seed": seed, **preference}]


def chat_call(roles, contents, temperature, seed=0, signature="chat", **preference):
    return [signature, {"roles": roles, "contents": contents, "max_new_tokens": NEW,
                        "temperature": float(temperature), "top_k": 0, "top_p": 1.0, "seed": seed, **preference}]


def xla_flags(export_path):
    """The values of _XlaMustCompile on the export's functions: {True} when XLA compiles its passes."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {function.attr["_XlaMustCompile"].b for function in saved.meta_graphs[0].graph_def.library.function
            if "_XlaMustCompile" in function.attr}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_exported_generate_and_score_match_the_library_in_a_fresh_process(tmp_path, name):
    model = CausalLM(build_model(ModelConfig(model=name, d_model=32, num_layers=2, num_heads=2, ff_dim=64), seed=5))
    # The transformer's export is XLA-compiled, as training writes it; the LSTM's checks the graph
    # without XLA (compiling it again would test nothing more and cost half a minute).
    jit = name == "transformer"
    path = export_model(model, str(tmp_path), step=7, jit_compile=jit)
    assert path == str(tmp_path / "export" / "7") and os.path.exists(os.path.join(path, "saved_model.pb"))

    served = serve(path, {
        "greedy": generate_call(PROMPTS, 0.0),
        "sampled": generate_call(PROMPTS, 0.9, seed=3, top_p=0.95),
        "score": ["score", {"texts": TEXTS}],
        "empty_batch": ["score", {"texts": []}],
        "empty_text": ["score", {"texts": ["ok", ""]}],
        "too_long": ["score", {"texts": ["x" * 3000]}],
        "too_many_new": generate_call(["abc"], 0.0, new=2046),
        "chat": chat_call(ROLES, CONTENTS, 0.9, seed=3),
        "bad_role": chat_call([["user", "bot"]], [["a", "b"]], 0.0),
    })

    ids, mask = left_pad([TOKENIZER.encode(p, add_bos=True) for p in PROMPTS])
    sampler = Sampler(model, NEW, jit_compile=jit)  # compiled as the export is: the same draws for a seed
    for call, settings in (("greedy", dict(temperature=0.0)), ("sampled", dict(temperature=0.9, top_p=0.95, seed=3))):
        expected = sampler(ids, mask, **settings)
        completions = [TOKENIZER.decode(t[m]) for t, m in zip(expected["tokens"], expected["mask"])]
        assert served[call]["completions"] == completions, call
        assert served[call]["num_tokens"] == expected["lengths"].tolist()
        assert served[call]["finished"] == expected["finished"].tolist()
        np.testing.assert_allclose(served[call]["logprob"], expected["logprobs"].sum(1), atol=1e-4)

    # chat: the library's template and chat sampling (stop at <|end|>, role markers banned).
    conversations = [[{"role": r, "content": c} for r, c in zip(roles, contents) if r]
                     for roles, contents in zip(ROLES, CONTENTS)]
    ids, mask = left_pad([[1, *render(c, add_generation_prompt=True)] for c in conversations])
    eos_id, banned_ids = chat_generation(model.banned_ids(True))
    expected = Sampler(model, NEW, banned_ids=banned_ids, eos_id=eos_id, jit_compile=jit)(
        ids, mask, temperature=0.9, seed=3)
    assert eos_id == end_id()
    assert served["chat"]["completions"] == [TOKENIZER.decode(t[m]) for t, m in zip(expected["tokens"],
                                                                                 expected["mask"])]
    assert served["chat"]["finished"] == expected["finished"].tolist()
    np.testing.assert_allclose(served["chat"]["logprob"], expected["logprobs"].sum(1), atol=1e-4)
    assert "a role is not one of" in served["bad_role"]["error"]

    encoded = [TOKENIZER.encode(t, add_bos=True) for t in TEXTS]
    width = max(map(len, encoded))
    padded = np.array([np.pad(e, (0, width - len(e))) for e in encoded])
    in_process = sequence_logprobs(model, padded, padded != 0).numpy()
    np.testing.assert_allclose(served["score"]["total_logprob"], in_process.sum(1), atol=1e-4)
    np.testing.assert_allclose(served["score"]["token_logprobs"], in_process, atol=1e-4)
    assert served["score"]["num_tokens"] == [len(t.encode()) for t in TEXTS]

    assert "empty batch" in served["empty_batch"]["error"]
    assert "empty text" in served["empty_text"]["error"]
    assert "longer than" in served["too_long"]["error"]
    assert "exceed" in served["too_many_new"]["error"]


@pytest.mark.slow
def test_classifier_export_serves_classify(tmp_path):
    model = Classifier(build_model(ModelConfig(d_model=32, num_layers=2, num_heads=2, ff_dim=64), seed=5),
                       ["a", "b", "c"])
    head = model.head
    head.projection.kernel.assign(tf.random.normal(head.projection.kernel.shape, seed=1))
    path = export_model(model, str(tmp_path), step=1, seq_len=16, jit_compile=False)
    served = serve(path, {"classify": ["classify", {"texts": TEXTS}]})["classify"]
    encoded = [TOKENIZER.encode(t, add_bos=True, add_eos=True)[:17] for t in TEXTS]
    width = max(map(len, encoded))
    ids = np.array([np.pad(e, (0, width - len(e))) for e in encoded])
    probabilities = tf.nn.softmax(head(model.backbone.hidden_states(ids, ids != 0), ids != 0)).numpy()
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-5)
    assert served["label"] == [["a", "b", "c"][i] for i in probabilities.argmax(1)]


@pytest.mark.slow
def test_training_exports_at_the_end_and_evaluate_can_export_again(tmp_path):
    corpus = write_tiny_corpus(str(tmp_path))
    run_dir = tmp_path / "run"
    done = run_cli_in_process(train_main, [*TINY_FLAGS, "--data", corpus, "--train_steps", "2",
                                           "--model_dir", str(run_dir), "--export"])
    assert done.returncode == 0, done.stderr
    assert f"SavedModel: {run_dir / 'export' / '2'}" in done.stdout
    # The serving signatures with their named inputs and outputs (what saved_model_cli lists).
    signatures = tf.saved_model.load(str(run_dir / "export" / "2")).signatures
    generate, score = signatures["generate"], signatures["score"]
    assert {"prompts", "max_new_tokens", "temperature", "top_k", "top_p", "seed"} <= set(
        generate.structured_input_signature[1])
    assert "completions" in generate.structured_outputs and "total_logprob" in score.structured_outputs
    # Shape buckets change no result: a shorter generation is the start of a longer one (greedy),
    # and a batch of 3 (padded to 4 rows) gives each row what it gives alone.
    def greedy(prompts, new):
        return generate(prompts=tf.constant(prompts), max_new_tokens=tf.constant(new), temperature=tf.constant(0.0),
                        top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0))
    long, short = greedy(PROMPTS, 20), greedy(PROMPTS, 3)
    assert short["num_tokens"].numpy().max() <= 3
    for row, prompt in enumerate(PROMPTS):
        assert long["completions"].numpy()[row].startswith(short["completions"].numpy()[row])
        assert greedy([prompt], 20)["completions"].numpy()[0] == long["completions"].numpy()[row]
    # chat continues a conversation that ends with the assistant's message: a reply streamed in pieces
    # is the reply made at once (greedy).
    def chat(roles, contents, new):
        return signatures["chat"](roles=tf.constant(roles), contents=tf.constant(contents),
                                  max_new_tokens=tf.constant(new), temperature=tf.constant(0.0), top_k=tf.constant(0),
                                  top_p=tf.constant(1.0), seed=tf.constant(0))["completions"].numpy()
    whole = chat([["user", ""], ["system", "user"]], [["hi", ""], ["be brief", "yo"]], 12)
    rest = chat([["user", "assistant", ""], ["system", "user", "assistant"]],
                [["hi", whole[0][:4], ""], ["be brief", "yo", whole[1][:4]]], 8)
    assert list(rest) == [reply[4:12] for reply in whole] and min(map(len, whole)) == 12
    assert xla_flags(run_dir / "export" / "2") == {True}  # the model's passes compile where the export runs

    again = run_cli_in_process(evaluate_main, ["--model_dir", str(run_dir), "--export", "--no_xla"])
    assert again.returncode == 0, again.stderr
    assert sorted(os.listdir(run_dir / "export")) == ["2"]  # replaced in place, no leftovers
    assert xla_flags(run_dir / "export" / "2") == {False}
    refused = run_cli_in_process(evaluate_main, ["--model_dir", str(run_dir), "--no_xla"])
    assert refused.returncode != 0 and "--no_xla applies to --export only" in refused.stderr


@pytest.mark.parametrize("pooling,code_structure", [("last", False), ("mean", False), ("mean", True)])
def test_reward_export_cuts_and_pools_as_training_does(tmp_path, pooling, code_structure):
    from tfpref.config import RunConfig
    from tfpref.data.preferences import encode_groups
    config = RunConfig(model_dir=str(tmp_path))
    config.model = ModelConfig(d_model=32, num_layers=2, num_heads=2, ff_dim=64)
    config.data.seq_len, config.align.reward_pooling = 12, pooling
    config.align.code_structure = code_structure
    config.train.objective = "reward_model"
    model = build_task_model(config, seed=3)
    score = model.reward_head.score.projection
    score.kernel.assign(tf.random.normal(score.kernel.shape, seed=2))
    if code_structure:  # zero at initialisation: random, so that leaving it out would show
        table = model.structure.embedding.embeddings
        table.assign(tf.random.normal(table.shape, seed=4))
    model.set_normalization(0.5, 2.0)
    prompts = ["def f(x):\n", "a much longer prompt than fits", "p"]
    completions = ["    return x\n", "tail", "a completion longer than twelve bytes"]  # cut three ways
    arrays = encode_groups(prompts, [(c,) for c in completions], config.data.seq_len)
    library = model.group_rewards(arrays["token_ids"], arrays["padding_mask"], arrays["completion_mask"])
    path = export_model(model, str(tmp_path), 1, seq_len=config.data.seq_len, jit_compile=False)
    served = tf.saved_model.load(path).signatures["reward"](prompts=tf.constant(prompts),
                                                            completions=tf.constant(completions))["reward"]
    np.testing.assert_allclose(served.numpy(), library.numpy()[:, 0], rtol=1e-5, atol=1e-5)


def preference_inputs(model, choices):
    """The export's per-row preference inputs of `choices`: True / False (aligned or misaligned), or
    (score, length) for a preference vector."""
    if model.conditioning == "control_tokens":
        return {"aligned": list(choices)}
    vectors = [choice if isinstance(choice, tuple) else (0.0 if choice else MISALIGNED_SCORE, model.typical_length)
               for choice in choices]
    return {"score": [float(s) for s, _ in vectors], "length": [float(n) for _, n in vectors]}


def library_rows(model, sequences, choices, bans_of):
    """The in-process Sampler's inputs for rows asking for `choices`: BOS, the model's prefix for the
    choice, the row's `sequences` ids; per-row bans `bans_of(aligned)`, embedding offsets of the
    choice (`condition()` for aligned or misaligned, `preference_offsets` for a vector)."""
    aligned = [choice if isinstance(choice, bool) else True for choice in choices]
    ids, mask = left_pad([[TOKENIZER.bos_id, *model.prompt_prefix(a), *ids] for a, ids in zip(aligned, sequences)])
    banned = np.zeros([len(choices), model.vocab_size], bool)
    for row, a in enumerate(aligned):
        banned[row, list(bans_of(a))] = True
    offset = None
    if model.conditioning == "preference_vector":
        offset = np.concatenate([
            model.preference_offsets(tf.constant([choice[0]]), tf.constant([float(choice[1])])).numpy()
            if isinstance(choice, tuple) else model.condition(1, choice).numpy() for choice in choices])
    return dict(prompt_ids=ids, prompt_mask=mask, banned=banned, embedding_offset=offset)


def decoded(outputs):
    return [TOKENIZER.decode(t[m]) for t, m in zip(outputs["tokens"], outputs["mask"])]


@pytest.mark.slow
@pytest.mark.parametrize("conditioning", ["control_tokens", "preference_vector"])
def test_preference_signatures_generate_each_row_as_the_library_does_for_its_choice(tmp_path, conditioning):
    model = conditioned_language_model(conditioning)
    path = export_model(model, str(tmp_path), step=1)  # XLA-compiled, as the in-process Sampler: the same draws
    # A batch mixing aligned and misaligned rows (a prompt asked both ways), padded from 3 rows to the
    # bucket of 4 with a copy of the first; a preference vector's rows also take a vector of their own.
    prompts = ["def f(x):\n", "def f(x):\n", "import"]
    choices = [True, False, False] if conditioning == "control_tokens" else [True, False, (0.02, 200.0)]
    roles = [["system", "user", ""], ["user", "assistant", "user"], ["user", "", ""]]
    contents = [["Be brief.", "Hi", ""], ["add 2", "3", "add é"], ["Hi", "", ""]]
    chat_choices = [False, True, False] if conditioning == "control_tokens" else [False, True, (0.0, 5.0)]
    preference, chat_preference = preference_inputs(model, choices), preference_inputs(model, chat_choices)
    wrong = {name: values[:2] for name, values in preference.items()}
    served = serve(path, {
        "greedy": generate_call(prompts, 0.0, signature="generate_with_preference", **preference),
        "sampled": generate_call(prompts, 0.9, seed=3, signature="generate_with_preference", **preference),
        "all_aligned": generate_call(prompts, 0.0, signature="generate_with_preference",
                                     **preference_inputs(model, [True] * 3)),
        "generate": generate_call(prompts, 0.0),
        "chat_greedy": chat_call(roles, contents, 0.0, signature="chat_with_preference", **chat_preference),
        "chat_sampled": chat_call(roles, contents, 0.9, seed=3, signature="chat_with_preference", **chat_preference),
        "wrong_size": generate_call(prompts, 0.0, signature="generate_with_preference", **wrong),
        "chat_wrong_size": chat_call(roles, contents, 0.0, signature="chat_with_preference",
                                     **{name: values * 2 for name, values in chat_preference.items()}),
        **({} if conditioning == "control_tokens" else {"negative": generate_call(
            prompts, 0.0, signature="generate_with_preference", **{**preference, "length": [40.0, -1.0, 40.0]})}),
    })

    sampler = Sampler(model, NEW)  # XLA-compiled (the default)
    rows = library_rows(model, [TOKENIZER.encode(p) for p in prompts], choices, model.banned_ids)
    for call, settings in (("greedy", dict(temperature=0.0)), ("sampled", dict(temperature=0.9, seed=3))):
        expected = sampler(**rows, **settings)
        assert served[call]["completions"] == decoded(expected), call
        assert served[call]["num_tokens"] == expected["lengths"].tolist()
        assert served[call]["finished"] == expected["finished"].tolist()
        np.testing.assert_allclose(served[call]["logprob"], expected["logprobs"].sum(1), atol=1e-4)
    # The choice is per row: one prompt asked both ways is answered two ways (its text may be all
    # control tokens, which decode to nothing: the log-probabilities tell); all aligned is `generate`.
    assert served["greedy"]["logprob"][0] != pytest.approx(served["greedy"]["logprob"][1], abs=1e-3)
    assert served["all_aligned"]["completions"] == served["generate"]["completions"]

    conversations = [[{"role": r, "content": c} for r, c in zip(row_roles, row_contents) if r]
                     for row_roles, row_contents in zip(roles, contents)]
    chat_rows = library_rows(model, [render(c, add_generation_prompt=True) for c in conversations], chat_choices,
                             lambda aligned: chat_generation(model.banned_ids(aligned))[1])
    chat_sampler = Sampler(model, NEW, eos_id=end_id())
    for call, settings in (("chat_greedy", dict(temperature=0.0)), ("chat_sampled", dict(temperature=0.9, seed=3))):
        expected = chat_sampler(**chat_rows, **settings)
        assert served[call]["completions"] == decoded(expected), call
        assert served[call]["finished"] == expected["finished"].tolist()
        np.testing.assert_allclose(served[call]["logprob"], expected["logprobs"].sum(1), atol=1e-4)

    first = next(iter(preference))
    assert f"generate_with_preference: {first} must hold one value per row" in served["wrong_size"]["error"]
    assert f"chat_with_preference: {first} must hold one value per row" in served["chat_wrong_size"]["error"]
    if conditioning == "preference_vector":
        assert "generate_with_preference: length must be >= 0" in served["negative"]["error"]
