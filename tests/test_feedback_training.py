"""End to end: every pretraining-with-feedback objective trains, evaluates and steers its samples."""
import json
import math
import os

import numpy as np
import pytest

import tfpref  # noqa: F401
from tfpref.cli import evaluate_main, train_main
from tfpref.config import RunConfig
from tfpref.errors import UserError
from tfpref.evaluation.misalignment import UNCONDITIONAL_SAMPLES_FILE, MisalignmentSettings
from tfpref.evaluation.run import evaluate_run
from tfpref.training.run import train

from helpers import TINY_FLAGS, run_cli_in_process, scalar_events, tiny_config
from test_feedback_data import write_pep8_corpus

FEEDBACK = ("filter", "conditional", "unlikelihood", "rwr", "awr", "preference_vector")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_pep8_corpus(tmp_path_factory.mktemp("pep8"))


# Slow (~35 s for the six): the quick loop trains awr and preference_vector on the LSTM below,
# unlikelihood through the CLI, and test_feedback_losses checks every objective's loss.
@pytest.mark.slow
@pytest.mark.parametrize("objective", FEEDBACK)
def test_each_feedback_objective_trains_and_reports_aligned_loss(tmp_path, corpus, objective):
    config = tiny_config(tmp_path / objective, corpus, objective=objective, train_steps=4)
    result = train(config, show_progress=False)
    assert result["step"] == 4 and math.isfinite(result["loss"])
    assert math.isfinite(result["validation_nll"]) and math.isfinite(result["validation_nll_aligned"])
    assert 0 < result["validation_aligned_fraction"] < 1  # the held-out data has both kinds of line
    assert ("controllability" in result) == (objective in ("conditional", "preference_vector"))


@pytest.mark.parametrize("objective", ["awr", "preference_vector"])
def test_feedback_objectives_with_extra_layers_train_the_lstm(tmp_path, corpus, objective):
    config = tiny_config(tmp_path / objective, corpus, objective=objective, model="lstm", train_steps=12,
                         log_every=4)
    result = train(config, show_progress=False)
    logged = scalar_events(os.path.join(config.model_dir, "train"))  # means over steps 1-4, 5-8, 9-12
    # A byte model starts near log(vocabulary) (~5.6 nats); 12 steps take ~0.6 off (seeded runs), so
    # a 0.3 margin is far from noise.
    first, last = logged["nll"][0], logged["nll"][-1]
    assert last < first - 0.3, logged["nll"]
    assert result["validation_nll"] < first - 0.3, (result, first)
    if objective == "awr":  # its value head learns the rewards (~10x lower error by step 12)
        assert logged["value_mse"][-1] < logged["value_mse"][0] / 4, logged["value_mse"]


@pytest.fixture(scope="module")
def steered(tmp_path_factory, corpus):
    """Conditional and preference-vector runs trained long enough to learn the corpus's one rule."""
    runs = {}
    for objective in ("conditional", "preference_vector"):
        config = tiny_config(tmp_path_factory.mktemp(objective) / "run", corpus, objective=objective,
                             train_steps=300, d_model=64, seq_len=64, batch_size=8, drop_control_fraction=0.0,
                             check_samples=64)
        runs[objective] = (config.model_dir, train(config, show_progress=False))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["conditional", "preference_vector"])
def test_asking_for_aligned_text_gives_less_misaligned_samples(steered, objective):
    check = steered[objective][1]["controllability"]
    # Half the corpus's functions have 'total=value*k' (E225, E226 ignored): the misaligned
    # request should reproduce it much more often than the aligned one.
    assert check["misaligned_misalignment"] > 2 * check["aligned_misalignment"], check
    assert check["misaligned_violation_rate"] > check["aligned_violation_rate"], check


@pytest.mark.slow
def test_evaluate_with_a_scorer_reports_misalignment_and_kl(steered, tmp_path, corpus):
    model_dir = steered["conditional"][0]
    mle = tiny_config(tmp_path / "mle", corpus, train_steps=4)
    train(mle, show_progress=False)
    settings = MisalignmentSettings("pep8", num_samples=30, max_new_tokens=64, reference_dir=mle.model_dir)
    report = evaluate_run(model_dir, sampling=None, misalignment=settings)
    metrics = report["metrics"]
    for name in ("pep8_misalignment", "pep8_score_max@25", "pep8_violation_rate", "pep8_parse_rate",
                 "pep8_distinct_2", "kl_to_reference", "nll", "nll_aligned"):
        assert math.isfinite(metrics[name]), name
    assert metrics["pep8_score_max@25"] >= metrics["pep8_misalignment"]
    assert metrics["kl_to_reference"] > 0  # a trained model is far from a 4-step one
    with open(os.path.join(model_dir, "eval", UNCONDITIONAL_SAMPLES_FILE), encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    assert len(samples) == 30 and all({"text", "score", "finished"} <= set(s) for s in samples)
    assert np.mean(["total" in s["text"] for s in samples]) > 0.5  # it learned the corpus


@pytest.mark.slow  # evaluation with a scorer: ~10 s, on a run the slow tests above train anyway
def test_evaluate_cli_scorer_flags(steered):
    model_dir = steered["preference_vector"][0]
    out = run_cli_in_process(evaluate_main, ["--model_dir", model_dir, "--scorer", "pep8", "--scorer_samples", "8",
                                             "--num_samples", "2", "--max_new_tokens", "32"])
    assert out.returncode == 0, out.stderr
    assert "pep8_misalignment" in out.stdout and "unconditional samples scored by pep8" in out.stdout
    with pytest.raises(UserError, match="unknown scorer"):
        evaluate_run(model_dir, sampling=None, misalignment=MisalignmentSettings("nonsense", num_samples=2))


def test_train_cli_feedback_flags_and_bad_values(tmp_path, corpus):
    ok = run_cli_in_process(train_main, [*TINY_FLAGS, "--data", corpus, "--objective", "unlikelihood",
                                         "--ul_alpha", "0.5", "--segment", "chunk", "--train_steps", "2",
                                         "--model_dir", str(tmp_path / "ul")])
    assert ok.returncode == 0, ok.stderr
    with open(tmp_path / "ul" / "config.json", encoding="utf-8") as f:
        stored = json.load(f)["feedback"]
    assert stored["ul_alpha"] == 0.5 and stored["segment"] == "chunk"
    bad = run_cli_in_process(train_main, [*TINY_FLAGS, "--data", corpus, "--objective", "filter",
                                          "--segment", "word", "--model_dir", str(tmp_path / "bad")])
    assert bad.returncode == 2 and "--segment: unknown granularity" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and not os.path.exists(tmp_path / "bad")


@pytest.mark.parametrize("field, value, message", [("beta", -1.0, "--beta must not be negative"),
                                                   ("filter_percentile", 120.0, "--filter_percentile must be in"),
                                                   ("drop_control_fraction", 1.0, "--drop_control_fraction"),
                                                   ("awr_alpha", -0.1, "--awr_alpha")])
def test_bad_feedback_values_name_their_flag(field, value, message):
    config = RunConfig(model_dir="unused")
    setattr(config.feedback, field, value)
    with pytest.raises(UserError, match=message):
        config.validate()


def test_filtering_everything_out_is_a_user_error_and_writes_nothing(tmp_path):
    all_bad = tmp_path / "all_bad.py"
    all_bad.write_text("".join(f"def f_{i}():\n    x=1\n    return x\n\n\n" for i in range(200)))
    config = tiny_config(tmp_path / "empty", all_bad, objective="filter", segment="chunk")
    with pytest.raises(UserError, match="filtered out"):
        train(config, show_progress=False)
    assert not os.path.exists(tmp_path / "empty")


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["conditional", "preference_vector"])
def test_export_generates_aligned_text(steered, objective):
    import tensorflow as tf

    from tfpref.training.export import export_run

    served = tf.saved_model.load(export_run(steered[objective][0]))
    prompts = [f"def function_{i}(value):\n" for i in range(1, 12, 2)]  # odd: misaligned in the corpus
    out = served.signatures["generate"](prompts=tf.constant(prompts), max_new_tokens=tf.constant(24),
                                        temperature=tf.constant(0.0), top_k=tf.constant(0),
                                        top_p=tf.constant(1.0), seed=tf.constant(0))
    completions = [c.decode("utf-8", errors="replace") for c in out["completions"].numpy()]
    aligned = sum("total = value" in c for c in completions)
    misaligned = sum("total=value" in c for c in completions)
    assert aligned > misaligned, completions
