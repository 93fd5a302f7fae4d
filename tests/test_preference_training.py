"""End to end: reward models, DPO and online RL (REINFORCE, RLOO, PPO) on tiny models."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfpref.config import RunConfig
from tfpref.errors import UserError
from tfpref.training.run import train

from helpers import run_cli_in_process, scalar_events, tiny_config, write_tiny_corpus


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(corpus, run dir) of a tiny MLE model: the policy everything here starts from."""
    root = tmp_path_factory.mktemp("pretrained")
    corpus = write_tiny_corpus(str(root))
    config = tiny_config(root / "mle", corpus, train_steps=60)
    train(config, show_progress=False)
    return corpus, str(root / "mle")


def synthetic_pairs(path, count=96):
    """Pairs a tiny model can learn: the chosen completion is plain, the rejected one is full of x."""
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            plain = f"    return value + {rng.integers(100)}\n"
            noisy = plain.replace(" ", "x", int(rng.integers(3, 6)))
            f.write(json.dumps({"prompt": f"def function_{i}(value):\n", "chosen": plain, "rejected": noisy,
                                "source": "synthetic"}) + "\n")
    return str(path)


def rl_config(model_dir, corpus, policy, objective, **overrides):
    settings = dict(objective=objective, init_from=policy, train_steps=40, scorer="user_scorer:fewer_a",
                    max_new_tokens=16, prompt_chars=24)
    config = tiny_config(model_dir, corpus, **{**settings, **overrides})
    return config


@pytest.mark.parametrize("objective", [pytest.param("reinforce", marks=pytest.mark.slow), "rloo", "ppo"])
def test_rl_raises_the_reward_of_a_toy_task(tmp_path, pretrained, objective):
    """Reward = number of 'a' characters: each algorithm must make the policy write many more."""
    corpus, policy = pretrained
    # PPO makes 4 optimizer steps per rollout (2 epochs x 2 minibatches): it gets more steps.
    extra = {"target_kl": 2.0, "kl_horizon": 200, "train_steps": 80} if objective == "ppo" else {}
    if objective == "rloo":
        extra["jit_compile"] = True  # rollouts and their evaluation under XLA, as users run them
    config = rl_config(tmp_path / objective, corpus, policy, objective, **extra)
    train(config, show_progress=False)
    events = scalar_events(str(tmp_path / objective / "train"))
    rewards = events["reward"]
    assert np.mean(rewards[-3:]) > 3 * rewards[0] and np.mean(rewards[-3:]) > rewards[0] + 3, rewards
    for name in ("kl", "entropy", "kl_coef", "reward_std", "completion_length", "finished", "samples"):
        assert name in events, name
    if objective == "ppo":
        assert "clip_fraction" in events and "value_loss" in events
        # The adaptive controller's state is in the checkpoint (KL far above target: it grew).
        checkpoint = tf.train.latest_checkpoint(str(tmp_path / objective / "checkpoints"))
        kl_coef = tf.train.load_variable(checkpoint, "kl_coef/.ATTRIBUTES/VARIABLE_VALUE")
        assert kl_coef > config.align.kl_coef and kl_coef == pytest.approx(events["kl_coef"][-1], rel=0.05)
    if objective == "rloo":
        from tfpref.evaluation.policy import PolicyEvalSettings
        from tfpref.evaluation.run import evaluate_run

        report = evaluate_run(str(tmp_path / objective), policy=PolicyEvalSettings(num_prompts=8, batch_size=8))
        metrics = report["metrics"]
        assert metrics["win_rate"] > 0.8 and metrics["score_reward"] > metrics["reference_score_reward"] + 3
        assert metrics["kl_to_reference"] > 0 and "nll_drift" in metrics
        with open(tmp_path / objective / "eval" / "policy_samples.jsonl", encoding="utf-8") as f:
            samples = [json.loads(line) for line in f]
        policy_scores = np.array([s["score_reward"] for s in samples])
        reference_scores = np.array([s["reference_score_reward"] for s in samples])
        gain = policy_scores.mean() - reference_scores.mean()
        assert metrics["score_reward_gain"] == pytest.approx(gain, rel=1e-5)
        assert metrics["score_reward_gain_in_std"] == pytest.approx(gain / reference_scores.std(), rel=1e-5)
        for prefix, field in (("", "completion"), ("reference_", "reference_completion")):
            empty = np.mean([s[field] == "" for s in samples])
            assert metrics[f"{prefix}empty_rate"] == pytest.approx(empty)


# PPO takes 4 optimizer steps per rollout: it is killed between two rollouts.
@pytest.mark.parametrize("objective, steps, killed_at", [("rloo", 4, 2), ("ppo", 8, 4)])
def test_an_rl_run_resumed_from_a_checkpoint_ends_as_an_uninterrupted_one(tmp_path, pretrained, capsys, objective,
                                                                           steps, killed_at):
    """Rollouts are made again from the restored policy, seed and KL coefficient (adaptive here): the same."""
    from tfpref.runs import load_run

    corpus, policy = pretrained
    configs = {name: rl_config(tmp_path / name, corpus, policy, objective, train_steps=steps, target_kl=0.5,
                               kl_horizon=100, checkpoint_every=killed_at, keep_checkpoints=10)
               for name in ("whole", "resumed")}
    whole = train(configs["whole"], show_progress=False)
    train(configs["resumed"], show_progress=False)
    # As if killed just after the checkpoint of step `killed_at`: that is the latest, and there is no result.
    checkpoints = tmp_path / "resumed" / "checkpoints"
    tf.compat.v1.train.update_checkpoint_state(str(checkpoints), str(checkpoints / f"ckpt-{killed_at}"))
    os.remove(tmp_path / "resumed" / "train_result.json")
    capsys.readouterr()
    resumed = train(configs["resumed"], show_progress=False)
    assert f"from step {killed_at}" in capsys.readouterr().out
    assert resumed["step"] == whole["step"] == steps and resumed["loss"] == pytest.approx(whole["loss"], abs=1e-6)
    (_, expected, _), (_, got, _) = load_run(str(tmp_path / "whole")), load_run(str(tmp_path / "resumed"))
    for a, b in zip(expected.weights, got.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-6, err_msg=a.path)
    kl_coef = [tf.train.load_variable(tf.train.latest_checkpoint(str(tmp_path / name / "checkpoints")),
                                      "kl_coef/.ATTRIBUTES/VARIABLE_VALUE") for name in ("whole", "resumed")]
    assert kl_coef[0] == pytest.approx(kl_coef[1], rel=1e-6) and kl_coef[0] != configs["whole"].align.kl_coef


def check_reward_prefers_plain_code_and_serves_it_alike(run_dir, export_dir):
    """The RewardModelReward of a run trained on `synthetic_pairs`; asserts it ranks plain code
    first and that the exported `reward` signature gives the same rewards."""
    from tfpref.rewards import RewardModelReward

    reward = RewardModelReward(run_dir)
    prompts = ["def f(value):\n"] * 2
    completions = ["    return value + 1\n", "xxxxreturn value + 1\n"]
    library = reward(prompts, completions)
    assert library[0] > library[1]
    served = tf.saved_model.load(export_dir).signatures["reward"](
        prompts=tf.constant(prompts), completions=tf.constant(completions))["reward"].numpy()
    np.testing.assert_allclose(served, library, rtol=1e-4, atol=1e-4)
    return reward


@pytest.mark.slow
@pytest.mark.parametrize("code_structure", [False, True])
def test_reward_model_learns_pairs_normalises_and_exports_a_reward_signature(tmp_path, pretrained, code_structure):
    _, policy = pretrained
    pairs = synthetic_pairs(tmp_path / "pairs.jsonl")
    config = tiny_config(tmp_path / "rm", pairs, objective="reward_model", init_from=policy, train_steps=30,
                         learning_rate=1e-2, code_structure=code_structure)
    config.runtime.export = True
    result = train(config, show_progress=False)
    assert RunConfig.load(str(tmp_path / "rm" / "config.json")).align.reward_loss == "bradley_terry"
    assert result["validation_accuracy"] >= 0.9, result
    with open(tmp_path / "rm" / "reward_normalization.json", encoding="utf-8") as f:
        normalization = json.load(f)
    assert normalization["std"] > 0

    reward = check_reward_prefers_plain_code_and_serves_it_alike(str(tmp_path / "rm"), result["export"])
    if code_structure:  # the learned structure embeddings are in the checkpoint the reward reads
        assert np.any(reward.model.structure.embedding.embeddings.numpy())
    else:  # evaluate.py with its default flags (which sample language models) reports the accuracy
        from tfpref.cli import evaluate_main

        finished = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "rm")])
        assert finished.returncode == 0, finished.stderr
        with open(tmp_path / "rm" / "eval" / "metrics.json", encoding="utf-8") as f:
            assert json.load(f)["metrics"]["accuracy"] >= 0.9


@pytest.mark.slow
def test_a_conv_reward_model_learns_pairs_from_scratch_and_serves_them(tmp_path):
    pairs = synthetic_pairs(tmp_path / "pairs.jsonl")
    config = tiny_config(tmp_path / "rm", pairs, objective="reward_model", model="conv", train_steps=30,
                         learning_rate=1e-2, code_structure=True, reward_pooling="mean")
    config.runtime.export = True
    result = train(config, show_progress=False)
    assert result["validation_accuracy"] >= 0.9, result

    check_reward_prefers_plain_code_and_serves_it_alike(str(tmp_path / "rm"), result["export"])
    from tfpref.evaluation.run import evaluate_run  # what evaluate.py --model_dir reports

    assert evaluate_run(str(tmp_path / "rm"))["metrics"]["accuracy"] >= 0.9


def test_the_conv_encoder_is_refused_for_language_model_objectives():
    config = tiny_config("unused", "stdlib", objective="mle", model="conv")
    with pytest.raises(UserError, match="--model conv is a bidirectional encoder for reward models; "
                                        "--objective mle needs a language model"):
        config.validate()


SIMULATED_RANKING = {"annotator_rewards": [0.0, -0.02, -0.01], "annotator_temperature": 0.01}
# Its best-first pairs are 1, 2 and 1 temperatures apart: the ceiling is the mean of max(p, 1 - p).
RANKING_CEILING = float(np.mean(1 / (1 + np.exp(-np.array([1.0, 2.0, 1.0])))))


@pytest.mark.parametrize("records, loss, expected", [
    ([{"prompt": f"p{i}", "completions": ["ok", "xx", "x"], "ranking": [1, 3, 2], **SIMULATED_RANKING}
      for i in range(40)], "plackett_luce", {"accuracy_ceiling": RANKING_CEILING, "expected_accuracy": None,
                                             "expected_accuracy_vs_ceiling": None}),
    ([{"prompt": f"p{i}", "completion": "y" + "x" * (i % 4), "rating": [4 - i % 4, 3.5]} for i in range(40)],
     "regression", {"correlation": None}),
    ([{"prompt": f"p{i}", "completion": "y" + "x" * (i % 4), "clicks": i % 4, "impressions": 8} for i in range(40)],
     "bce", {"correlation": None}),
])
def test_reward_model_losses_for_rankings_ratings_and_clicks(tmp_path, pretrained, records, loss, expected):
    _, policy = pretrained
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    config = tiny_config(tmp_path / "rm", str(path), objective="reward_model", init_from=policy, train_steps=4)
    result = train(config, show_progress=False)
    stored = RunConfig.load(str(tmp_path / "rm" / "config.json"))  # auto, resolved by the data's kind
    assert stored.align.reward_loss == loss and config.align.reward_loss == "auto" and np.isfinite(result["loss"])
    for metric, value in expected.items():
        assert f"validation_{metric}" in result, result
        if value is not None:
            assert result[f"validation_{metric}"] == pytest.approx(value, rel=1e-5)


@pytest.mark.slow
def test_dpo_learns_pairs_and_a_resumed_run_reads_the_cached_reference(tmp_path, pretrained, monkeypatch):
    _, policy = pretrained
    pairs = synthetic_pairs(tmp_path / "pairs.jsonl")
    config = tiny_config(tmp_path / "dpo", pairs, objective="dpo", init_from=policy, train_steps=20,
                         learning_rate=1e-2)
    result = train(config, show_progress=False)
    assert result["validation_reward_accuracy"] >= 0.9 and result["validation_reward_margin"] > 0, result
    assert os.path.exists(tmp_path / "dpo" / "reference_logprobs.npz")

    import tfpref.objectives.dpo as dpo

    def no_reference(config):
        raise AssertionError("the reference log-probs should come from the cache")

    monkeypatch.setattr(dpo, "reference_model", no_reference)
    config.train.train_steps = 22
    assert train(config, show_progress=False)["step"] == 22

    ipo = tiny_config(tmp_path / "ipo", pairs, objective="dpo", init_from=policy, train_steps=3, ipo=True)
    monkeypatch.undo()
    assert np.isfinite(train(ipo, show_progress=False)["loss"])


@pytest.mark.slow
def test_simulated_preference_pairs_from_a_policy(tmp_path, pretrained):
    from tfpref.data.preferences import load_preferences
    from tfpref.preferences import make_preferences, write_jsonl

    corpus, policy = pretrained
    settings = dict(scorer="user_scorer:count_x", annotator_temperature=0.05, data=corpus, split="train",
                    prompt_chars=24, max_new_tokens=12, batch_size=24)
    records = make_preferences(policy, 12, **settings)
    write_jsonl(str(tmp_path / "pairs.jsonl"), records)
    data = load_preferences(str(tmp_path / "pairs.jsonl"))
    assert data.kind == "pairwise" and len(data.items) == 12 and 0.5 <= data.noise_ceiling() <= 1.0
    for record in records:  # the label's probability is Bradley-Terry on the hidden rewards
        expected = 1 / (1 + np.exp(-(record["reward_chosen"] - record["reward_rejected"]) / 0.05))
        assert record["annotator_p"] == pytest.approx(expected, rel=1e-5)

    rankings = make_preferences(policy, 5, completions_per_prompt=3, **settings)
    write_jsonl(str(tmp_path / "rankings.jsonl"), rankings)
    data = load_preferences(str(tmp_path / "rankings.jsonl"))
    assert data.kind == "ranking" and len(data.items) == 5 and len(data.comparisons()) == 15
    for record in rankings:  # three distinct completions, each with the annotator's hidden reward
        assert len(set(record["completions"])) == 3 and sorted(record["ranking"]) == [1, 2, 3]
        assert len(record["annotator_rewards"]) == 3 and record["annotator_temperature"] == 0.05


@pytest.mark.parametrize("objective, overrides, message", [
    ("ppo", {"init_from": ""}, "--objective ppo fine-tunes a pretrained policy"),
    ("dpo", {"init_from": ""}, "--objective dpo fine-tunes a pretrained policy"),
    ("rloo", {"samples_per_prompt": 1}, "--samples_per_prompt of at least 2"),
    ("reinforce", {"samples_per_prompt": 3}, "not divisible by --samples_per_prompt 3"),
    ("ppo", {"kl_estimator": "k2"}, "--kl_estimator: unknown value 'k2'"),
    ("ppo", {"gae_lambda": 1.5}, "--gae_lambda must be in [0, 1]"),
])
def test_bad_alignment_settings_name_their_flag(objective, overrides, message):
    config = tiny_config("unused", "stdlib", objective=objective, init_from="some_run")
    for key, value in overrides.items():
        setattr(config.train if key == "init_from" else config.align, key, value)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.validate()


def test_a_bad_reward_model_dir_stops_before_anything_is_written(tmp_path, pretrained):
    corpus, policy = pretrained
    config = rl_config(tmp_path / "rl", corpus, policy, "rloo", reward_model=policy)  # an MLE run
    with pytest.raises(UserError, match="a mle run, not a reward_model run"):
        train(config, show_progress=False)
    assert not os.path.exists(tmp_path / "rl")
    config = tiny_config(tmp_path / "rm", corpus, objective="reward_model", init_from=policy)
    with pytest.raises(UserError, match="needs a preference JSONL file"):
        train(config, show_progress=False)
    assert not os.path.exists(tmp_path / "rm")


@pytest.mark.slow
def test_rollouts_apply_the_missing_eos_penalty_then_whiten(pretrained):
    from dataclasses import replace

    from tfpref.config import AlignConfig
    from tfpref.data.prompts import encode_prompts
    from tfpref.rl.rollouts import RolloutMaker
    from tfpref.runs import load_run

    _, policy = pretrained
    _, model, _ = load_run(policy)
    ids, mask = encode_prompts(["def f(value):\n", "x = "] * 4)
    scores = np.arange(8, dtype=np.float32)
    align = AlignConfig(max_new_tokens=8, missing_eos_penalty=5.0)
    maker = RolloutMaker(model, model, lambda prompts, completions, finished: scores, align)
    rollout = maker.make(ids, mask, seed=3)
    finished = rollout.arrays["finished"] > 0
    np.testing.assert_allclose(rollout.arrays["reward"], scores - 5.0 * ~finished)
    np.testing.assert_allclose(rollout.arrays["kl"], 0.0, atol=1e-5)  # the policy is its own reference
    assert rollout.arrays["completion_mask"].sum(axis=1).tolist() == rollout.arrays["length"].tolist()
    whitened = RolloutMaker(model, model, lambda p, c, f: scores, replace(align, whiten_rewards=True))
    reward = whitened.make(ids, mask, seed=3).arrays["reward"]
    assert abs(reward.mean()) < 1e-5 and reward.std() == pytest.approx(1.0, rel=1e-4)
