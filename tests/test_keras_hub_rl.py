"""RL (reinforce / rloo / ppo) and the feedback objectives (filter, unlikelihood, rwr, awr) on a keras-hub
preset: the adapters-off reference against a real copy, rollouts decoded with the preset's tokenizer,
tiny runs through the CLI and the run path, evaluate.py on them."""
import json

import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli_in_process, scalar_events, tiny_config, write_tiny_corpus
from keras_hub_presets import preset_backbone, save_tiny_gpt2_preset
from test_feedback_data import write_pep8_corpus
from tfpref.cli import evaluate_main, train_main
from tfpref.config import AlignConfig, ModelConfig
from tfpref.data.prompts import encode_prompts
from tfpref.data.scored import load_scored_token_data
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.data.tokenizers import KerasHubTokenizer
from tfpref.errors import UserError
from tfpref.models import CausalLM, build_model
from tfpref.models.keras_hub import KerasHubBackbone, is_lora_weight
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.sampling import Sampler, left_pad
from tfpref.objectives import OBJECTIVES
from tfpref.rl.reference import AdaptersOff, policy_reference
from tfpref.rl.rollouts import RolloutMaker
from tfpref.runs import load_run, resolve_config
from tfpref.training.run import train

# Prompts are a function's first line cut at PROMPT_CHARS characters: with the completion, they must fit
# the tiny preset's 64 positions (its vocabulary is nearly bytes).
PROMPT_CHARS, NEW = 24, 8


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, preset, corpus):
    """A preset fine-tuned in full for two MLE steps: the --init_from policy (and reference) of RL runs."""
    directory = tmp_path_factory.mktemp("base") / "run"
    train(tiny_config(directory, corpus, model="keras_hub", preset=preset, train_steps=2, learning_rate=1e-2),
          show_progress=False)
    return str(directory)


def adapted_policy(preset, seed=0):
    """A preset policy with rank-2 adapters whose b factors are random (not keras's zeros): it differs
    from its base model."""
    policy = CausalLM(build_model(ModelConfig(model="keras_hub", preset=preset, lora_rank=2)), name="causal_lm")
    rng = np.random.default_rng(seed)
    for variable in policy.backbone.weights:
        if variable.path.endswith("lora_kernel_b"):
            variable.assign(rng.normal(0, 0.5, variable.shape).astype(np.float32))
    return policy


def test_adapters_off_reference_equals_a_separate_copy(preset):
    policy, copy = adapted_policy(preset), preset_backbone(preset)
    reference = AdaptersOff(policy)
    tokenizer = KerasHubTokenizer(preset)
    ids, mask = left_pad([tokenizer.encode(t, add_bos=True) for t in ("def f(x):", "import os", "x = 1  # one")])
    mask = np.ones_like(mask)  # a plain forward pass over every column

    def logprobs(model):
        return tf.function(lambda i, m: sequence_logprobs(model, i, m))(ids, mask).numpy()

    base, adapted = logprobs(reference), logprobs(policy)
    np.testing.assert_allclose(base, logprobs(copy), atol=1e-5)
    assert np.abs(adapted - base).max() > 1e-2  # the adapters matter: the test compares something
    assert all(layer.lora_enabled for layer in reference.adapted)  # switched back on after tracing
    np.testing.assert_allclose(logprobs(policy), adapted, atol=1e-6)  # the policy's own trace is untouched
    with pytest.raises(tf.errors.InvalidArgumentError):  # beyond the preset's 64 positions
        reference.hidden_states(np.ones([1, 80], np.int32))
    assert all(layer.lora_enabled for layer in reference.adapted)  # back on after an error too

    # Generation through the view (its cached path, traced in the sampler's loop) is the copy's.
    prompts = left_pad([tokenizer.encode(t, add_bos=True) for t in ("def f(x):", "x")])
    through_view = Sampler(reference, NEW, jit_compile=False)(*prompts, temperature=0.0)
    through_copy = Sampler(copy, NEW, jit_compile=False)(*prompts, temperature=0.0)
    np.testing.assert_array_equal(through_view["tokens"], through_copy["tokens"])
    np.testing.assert_allclose(through_view["model_logprobs"], through_copy["model_logprobs"], atol=1e-5)


def test_the_reference_is_the_policy_with_adapters_off_only_when_they_are_new(tmp_path, preset, corpus, base_run):
    def config(init_from, **overrides):
        return resolve_config(tiny_config(tmp_path / "rl", corpus, objective="rloo", init_from=init_from,
                                          samples_per_prompt=2, **overrides))

    policy = adapted_policy(preset)
    assert isinstance(policy_reference(config(base_run, lora_rank=2), policy), AdaptersOff)
    # Trained in full: the reference is a copy of the --init_from weights.
    full = policy_reference(config(base_run), CausalLM(KerasHubBackbone(preset), name="causal_lm"))
    assert isinstance(full, CausalLM) and not full.trainable
    # Continuing --init_from's own adapters: with them off it would be the preset, not --init_from.
    lora_base = tmp_path / "lora_base"
    train(tiny_config(lora_base, corpus, model="keras_hub", preset=preset, lora_rank=2, train_steps=1),
          show_progress=False)
    assert isinstance(policy_reference(config(str(lora_base)), policy), CausalLM)


class EndTokenRaised:
    """A policy whose end-token logit is raised by `bias`, so that rollouts end at different steps."""

    def __init__(self, model, bias):
        self.model, self.bias = model, bias

    # Called as it is: autograph has no control flow to convert here, and converting a method of a
    # class that delegates every other attribute has been seen to go wrong.
    @tf.autograph.experimental.do_not_convert
    def logits_from_hidden(self, hidden):
        logits = self.model.logits_from_hidden(hidden)
        return logits + self.bias * tf.one_hot(self.model.eos_id, self.model.vocab_size)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_rollouts_decode_with_the_presets_tokenizer_and_stop_at_its_end_token(preset):
    tokenizer = KerasHubTokenizer(preset)
    policy = adapted_policy(preset)
    align = AlignConfig(max_new_tokens=NEW)
    lengths = lambda prompts, completions, finished: np.array([len(c) for c in completions], np.float32)  # noqa: E731
    maker = RolloutMaker(EndTokenRaised(policy, 4.0), AdaptersOff(policy), lengths, align, jit_compile=False,
                         tokenizer=tokenizer)
    texts = ["def f(x):", "import os", "x = 1", "class A:"] * 3
    ids, mask = encode_prompts(texts, tokenizer)
    assert ids[0][mask[0]][0] == tokenizer.bos_id and tokenizer.decode(ids[0][mask[0]]) == texts[0]
    rollout = maker.make(ids, mask, seed=5)
    arrays = rollout.arrays
    assert rollout.prompts == texts
    finished = arrays["finished"] > 0
    assert finished.any() and not finished.all()
    for row, completion in enumerate(rollout.completions):
        tokens = arrays["token_ids"][row][arrays["completion_mask"][row]]
        assert len(tokens) == arrays["length"][row]
        assert completion == tokenizer.decode(tokens)  # the preset's detokenizer, not bytes
        assert tokenizer.decode(tokenizer.encode(completion)) == completion
        if finished[row]:  # stopped at the preset's end token, and only there
            assert tokens[-1] == tokenizer.eos_id and tokenizer.eos_id not in tokens[:-1]
        else:
            assert len(tokens) == NEW and tokenizer.eos_id not in tokens
        assert arrays["reward"][row] == len(completion)
    assert any(ByteTokenizer().decode(arrays["token_ids"][r][arrays["completion_mask"][r]]) != c
               for r, c in enumerate(rollout.completions) if c)
    assert np.any(arrays["kl"] != 0)  # the policy's adapters move it away from the reference


def rl_args(model_dir, corpus, init_from, objective, *extra):
    return ["--model_dir", str(model_dir), "--data", corpus, "--init_from", init_from, "--objective", objective,
            "--batch_size", "4", "--samples_per_prompt", "2", "--max_new_tokens", str(NEW), "--prompt_chars",
            str(PROMPT_CHARS), "--seq_len", "32", "--learning_rate", "1e-2", "--warmup_steps", "1",
            "--log_every", "1", "--no_progress", "--no-export", "--no-jit_compile", *extra]


@pytest.mark.slow
def test_rloo_with_lora_and_a_kl_penalty_trains_the_adapters_only_and_is_evaluated(tmp_path, corpus, base_run):
    run = tmp_path / "rloo"
    result = run_cli_in_process(train_main, rl_args(run, corpus, base_run, "rloo", "--lora_rank", "2",
                                                    "--kl_coef", "0.1", "--train_steps", "3"))
    assert result.returncode == 0, result.stderr[-3000:]
    stored = json.load(open(run / "config.json"))
    assert stored["model"]["lora_rank"] == 2 and stored["model"]["model"] == "keras_hub"
    assert json.load(open(run / "train_result.json"))["step"] == 3
    logged = scalar_events(str(run / "train"))
    # New adapters start at zero: the first rollout's policy is its reference exactly; then they move.
    assert logged["kl"][0] == 0.0 and logged["kl"][-1] != 0.0 and np.isfinite(logged["loss"]).all()

    _, trained, _ = load_run(str(run))
    _, start, _ = load_run(base_run)
    base = {v.path: v.numpy() for v in start.backbone.weights}
    moved = 0
    for variable in trained.backbone.weights:
        if is_lora_weight(variable):
            moved += variable.path.endswith("lora_kernel_b") and bool(np.any(variable.numpy() != 0))
        else:  # the --init_from weights, bit for bit: they are the KL reference
            np.testing.assert_array_equal(variable.numpy(), base[variable.path], err_msg=variable.path)
    assert moved == 4

    # evaluate.py's policy report: samples of policy and reference decoded by the preset, rewards, KL.
    finished = run_cli_in_process(evaluate_main, ["--model_dir", str(run), "--num_samples", "4"])
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.load(open(run / "eval" / "metrics.json"))["metrics"]
    assert report["prompts"] == 4 and np.isfinite(report["kl_to_reference"]) and "score_reward" in report
    assert np.isfinite(report["nll_drift"])
    samples = [json.loads(line) for line in open(run / "eval" / "policy_samples.jsonl")]
    assert len(samples) == 4 and all(isinstance(s["completion"], str) for s in samples)


@pytest.mark.slow
def test_ppo_with_a_value_head_on_a_preset(tmp_path, corpus, base_run):
    config = tiny_config(tmp_path / "ppo", corpus, objective="ppo", init_from=base_run, samples_per_prompt=2,
                         max_new_tokens=NEW, prompt_chars=PROMPT_CHARS, ppo_epochs=1, ppo_minibatches=2,
                         train_steps=2, learning_rate=1e-2)
    result = train(config, show_progress=False)
    assert result["step"] == 2 and np.isfinite(result["loss"])
    logged = scalar_events(str(tmp_path / "ppo" / "train"))
    assert logged["value_loss"] and np.isfinite(logged["value_loss"]).all()
    _, trained, _ = load_run(str(tmp_path / "ppo"))
    assert isinstance(trained.backbone, KerasHubBackbone) and trained.value_head is not None
    fresh = CausalLM(KerasHubBackbone(trained.backbone.preset), value_head=True, name="causal_lm")
    assert fresh.value_head.weights[0].shape == trained.value_head.weights[0].shape == (32, 1)


def test_rl_refuses_what_does_not_fit_a_preset(tmp_path, preset, corpus, base_run):
    config = tiny_config(tmp_path / "long", corpus, objective="reinforce", init_from=base_run, samples_per_prompt=2,
                         max_new_tokens=60, prompt_chars=PROMPT_CHARS, train_steps=1)
    with pytest.raises(UserError, match="--max_new_tokens 60: .* exceed the model's 64 positions"):
        train(config, show_progress=False)
    # A conversation is rendered with the role tokens added to the preset's vocabulary.
    tokenizer = KerasHubTokenizer(preset)
    ids, mask = encode_prompts(["x", [{"role": "user", "content": "hi"}]], tokenizer)
    assert ids[1, -1] == tokenizer.control_tokens["<|assistant|>"] and ids[0, -1] != ids[1, -1]
    assert tokenizer.control_tokens["<|user|>"] in ids[1][mask[1]]


def test_scored_segments_are_tokenized_by_the_preset(tmp_path, preset, corpus):
    config = tiny_config(tmp_path / "f", corpus, model="keras_hub", preset=preset, objective="unlikelihood",
                         segment="line")
    data = load_scored_token_data(resolve_config(config), OBJECTIVES["unlikelihood"], ("validation",),
                                  show_progress=False)["validation"]
    tokenizer = KerasHubTokenizer(preset)
    stream, scores = data.stream, data.scores
    assert stream[0] == tokenizer.bos_id and len(stream) == len(scores)
    first_end = int(np.flatnonzero(stream == tokenizer.eos_id)[1])  # BOS and EOS are one id in GPT-2
    chunk = tokenizer.decode(stream[:first_end + 1])
    assert chunk.startswith("def function_") and chunk.endswith("    return total\n\n")
    # Each line's tokens carry that line's score: the line's own tokens decode to the line.
    lines = chunk.splitlines(keepends=True)
    position = 1
    for line in lines:
        count = len(tokenizer.encode(line))
        assert tokenizer.decode(stream[position:position + count]) == line
        assert len(set(scores[position:position + count].tolist())) == 1
        position += count


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["filter", "unlikelihood", "rwr", "awr"])
def test_feedback_objectives_train_on_a_preset(tmp_path, preset, corpus, objective):
    extra = {"filter_percentile": 50.0} if objective == "filter" else {}
    if objective == "unlikelihood":  # lines with and without violations: it refuses data with one kind only
        corpus = write_pep8_corpus(tmp_path)
    config = tiny_config(tmp_path / objective, corpus, model="keras_hub", preset=preset, objective=objective,
                         lora_rank=2 if objective == "awr" else 0, train_steps=3, learning_rate=1e-2, **extra)
    result = train(config, show_progress=False)
    assert result["step"] == 3 and np.isfinite(result["loss"]) and "validation_bits_per_token" in result
    if objective == "awr":
        assert np.isfinite(result["validation_value_mse"])
    if objective == "unlikelihood":  # evaluate.py measures the run on its held-out split, scored as in training
        finished = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / objective), "--max_batches", "1"])
        assert finished.returncode == 0, finished.stderr[-3000:]
        report = json.load(open(tmp_path / objective / "eval" / "metrics.json"))["metrics"]
        assert np.isfinite(report["nll_aligned"]) and np.isfinite(report["bits_per_token"])
        # --scorer: unconditional samples from the preset's start token, decoded by it and scored.
        finished = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / objective), "--max_batches", "1",
                                                      "--scorer", "pep8", "--scorer_samples", "4",
                                                      "--max_new_tokens", "8"])
        assert finished.returncode == 0, finished.stderr[-3000:]
        report = json.load(open(tmp_path / objective / "eval" / "metrics.json"))["metrics"]
        assert 0 <= report["pep8_violation_rate"] <= 1 and report["pep8_sample_bytes"] > 0
        samples = [json.loads(line) for line in open(tmp_path / objective / "eval" / "unconditional_samples.jsonl")]
        assert len(samples) == 4


def test_simulated_preference_pairs_from_a_preset_policy(base_run, corpus):
    from tfpref.preferences import make_preferences

    records = make_preferences(base_run, 3, data=corpus, split="train", prompt_chars=PROMPT_CHARS,
                               max_new_tokens=NEW, batch_size=4)
    assert len(records) == 3 and all(r["chosen"].strip() and r["rejected"].strip() for r in records)
    with pytest.raises(UserError, match="--max_new_tokens 60: .* exceed the policy's 64 positions"):
        make_preferences(base_run, 1, data=corpus, prompt_chars=PROMPT_CHARS, max_new_tokens=60, batch_size=4)
