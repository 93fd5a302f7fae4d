"""Thresholds for any scorer: percentiles, scorers' defaults, the aligned-fraction refusal, violations."""
import json
import os

import numpy as np
import pytest

from tfpref.cli import train_main
from tfpref.config import FeedbackConfig
from tfpref.data.thresholds import aligned_fraction, check_aligned_fraction, percentile_threshold, resolve_threshold
from tfpref.errors import UserError
from tfpref.evaluation.misalignment import misalignment_metrics
from tfpref.scorers import get_scorer
from tfpref.training.run import train

from helpers import TINY_FLAGS, run_cli_in_process, tiny_config
from test_feedback_data import write_pep8_corpus

SCORES = np.array([0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.5, 0.9, 1.0, 2.0])


def test_percentile_threshold_leaves_that_share_above_it():
    # 30% misaligned: the 70th percentile, sorted rank (10 - 1) * 0.7 = 6.3 -> 0.5 + 0.3 * (0.9 - 0.5).
    assert percentile_threshold(SCORES, 30) == pytest.approx(0.62)
    assert np.mean(SCORES > percentile_threshold(SCORES, 30)) == pytest.approx(0.3)
    shuffled = np.random.default_rng(0).permutation(SCORES)
    for percent in (1, 10, 25, 50, 90):
        assert percentile_threshold(shuffled, percent) == pytest.approx(np.percentile(SCORES, 100 - percent))
    # Ties at the threshold count as aligned: 10% asked, none of the zeros is misaligned.
    assert aligned_fraction(SCORES, percentile_threshold(SCORES, 75)) == pytest.approx(0.3)


def test_threshold_comes_from_the_percentile_then_the_flag_then_the_scorer():
    pep8, probability = get_scorer("pep8"), get_scorer("user_scorer:probability_of_x")
    assert resolve_threshold(FeedbackConfig(threshold_percentile=30, threshold=0.05), pep8, SCORES) == (
        pytest.approx(0.62), "--threshold_percentile 30")
    assert resolve_threshold(FeedbackConfig(threshold=0.05), pep8, SCORES) == (0.05, "--threshold")
    assert resolve_threshold(FeedbackConfig(), pep8)[0] == 0.0
    assert resolve_threshold(FeedbackConfig(), probability)[0] == 0.5  # the function's own declaration
    assert resolve_threshold(FeedbackConfig(), get_scorer("profanity"))[0] == 0.5
    assert resolve_threshold(FeedbackConfig(), get_scorer("user_scorer:count_x"))[0] == 0.0
    with pytest.raises(UserError, match="default_threshold must be a non-negative number"):
        get_scorer("user_scorer:bad_threshold")
    with pytest.raises(UserError, match="--threshold_percentile must be in"):
        FeedbackConfig(threshold_percentile=100).validate()


def test_aligned_fraction_outside_one_to_99_percent_is_refused():
    assert check_aligned_fraction("conditional", SCORES, 0.5, "--threshold") == pytest.approx(0.7)
    for threshold in (-1.0, 5.0):  # none aligned, all aligned
        with pytest.raises(UserError, match=r"conditional: (0\.00|100\.00)% of the 10 training segments.*"
                                             r"--threshold_percentile"):
            check_aligned_fraction("conditional", SCORES, threshold, "--threshold")


def test_a_degenerate_threshold_is_refused_before_anything_is_written(tmp_path):
    corpus = write_pep8_corpus(tmp_path)
    model_dir = tmp_path / "run"
    result = run_cli_in_process(train_main, [*TINY_FLAGS, "--data", corpus, "--model_dir", str(model_dir),
                                             "--objective", "unlikelihood", "--scorer", "user_scorer:always_high",
                                             "--train_steps", "2"])
    assert result.returncode == 2, result.stderr
    assert "0.00% of the" in result.stderr and "the user_scorer:always_high scorer's default" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(model_dir / "config.json")
    both = run_cli_in_process(train_main, [*TINY_FLAGS, "--data", corpus, "--model_dir", str(model_dir),
                                           "--objective", "conditional", "--threshold", "0.1",
                                           "--threshold_percentile", "10"])
    assert both.returncode == 2 and "give one" in both.stderr


def test_percentile_threshold_is_stored_and_the_run_resumes(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{'x' * count}{'a' * (20 - count)}\n" for count in rng.integers(0, 12, size=600)]
    corpus = tmp_path / "lines.txt"
    corpus.write_text("".join(lines))
    config = tiny_config(tmp_path / "run", corpus, objective="conditional", train_steps=2, check_samples=0,
                         scorer="user_scorer:count_x", segment="line", threshold_percentile=20)
    train(config, show_progress=False)
    with open(tmp_path / "run" / "config.json") as f:
        stored = json.load(f)["feedback"]
    scores = np.array([line.count("x") / len(line) for line in lines])
    assert stored["threshold_percentile"] == 20
    # The training split is most of the lines: its 80th percentile is one of the whole file's scores near it.
    assert np.mean(scores > stored["threshold"]) == pytest.approx(0.2, abs=0.06)
    config.train.train_steps = 3
    assert train(config, show_progress=False)["step"] == 3  # the derived threshold is no change of run


def test_a_violation_is_a_score_above_the_threshold():
    samples = [{"text": text, "finished": True} for text in ("x = 1\n", "x=1\n", "xx\n", "y\n")]
    metrics, scores = misalignment_metrics(samples, get_scorer("user_scorer:probability_of_x"))
    assert scores.tolist() == [0.9, 0.9, 0.9, 0.1]
    assert metrics["violation_rate"] == 0.75 and metrics["threshold"] == 0.5
    metrics, _ = misalignment_metrics(samples, get_scorer("user_scorer:probability_of_x"), threshold=0.95)
    assert metrics["violation_rate"] == 0.0
