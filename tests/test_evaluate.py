"""evaluate.py: held-out LM metrics, classification reports, files written, bad input."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

import tfpref  # noqa: F401
from tfpref.evaluation.metrics import classification_report

from helpers import REPO, TINY_FLAGS, run_train, write_tiny_corpus
from test_classify import write_labeled


def run_evaluate(args):
    return subprocess.run([sys.executable, "evaluate.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_classification_report_matches_a_hand_count():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 1, 0, 1, 1, 1]
    report, matrix = classification_report(labels, predictions, ["a", "b", "c"])
    np.testing.assert_array_equal(matrix, [[2, 1, 0], [0, 2, 0], [0, 1, 0]])
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["precision/a"] == 1.0 and report["recall/a"] == pytest.approx(2 / 3)
    assert report["precision/b"] == pytest.approx(2 / 4) and report["recall/b"] == 1.0
    assert report["precision/c"] == 0.0 and report["f1/c"] == 0.0  # never predicted, never right
    f1_a, f1_b = 2 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 / 1.5
    assert report["macro_f1"] == pytest.approx((f1_a + f1_b + 0) / 3)


def test_evaluate_a_language_model_run(tmp_path):
    corpus = write_tiny_corpus(str(tmp_path))
    trained = run_train([*TINY_FLAGS, "--data", corpus, "--train_steps", "20", "--model_dir", str(tmp_path / "lm")])
    assert trained.returncode == 0, trained.stderr
    done = run_evaluate(["--model_dir", str(tmp_path / "lm"), "--split", "test"])
    assert done.returncode == 0, done.stderr
    assert "perplexity" in done.stdout and "bits_per_byte" in done.stdout
    report = json.load(open(tmp_path / "lm" / "eval" / "metrics.json"))
    assert report["split"] == "test" and report["step"] == 20 and report["examples"] > 0
    metrics = report["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]), rel=1e-6)
    assert 0 < metrics["nll"] < math.log(272)  # trained: better than uniform over the vocabulary


def test_evaluate_a_classifier_reports_precision_recall_f1_and_confusion(tmp_path):
    corpus = write_tiny_corpus(str(tmp_path))
    assert run_train([*TINY_FLAGS, "--data", corpus, "--train_steps", "2",
                      "--model_dir", str(tmp_path / "lm")]).returncode == 0
    labeled = write_labeled(tmp_path / "labeled.jsonl")
    tuned = run_train(["--data", labeled, "--objective", "classify", "--init_from", str(tmp_path / "lm"),
                       "--freeze_backbone", "--train_steps", "30", "--batch_size", "16", "--seq_len", "32",
                       "--learning_rate", "3e-2", "--no_progress", "--model_dir", str(tmp_path / "clf")])
    assert tuned.returncode == 0, tuned.stderr
    done = run_evaluate(["--model_dir", str(tmp_path / "clf"), "--split", "test"])
    assert done.returncode == 0, done.stderr
    assert "confusion matrix" in done.stdout
    report = json.load(open(tmp_path / "clf" / "eval" / "metrics.json"))
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == report["examples"] > 0
    assert report["metrics"]["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    for name in ("macro_f1", "precision/spaced", "recall/tight", "f1/tight"):
        assert name in report["metrics"]


def test_evaluate_a_directory_that_is_not_a_run_is_a_one_line_error(tmp_path):
    done = run_evaluate(["--model_dir", str(tmp_path / "nothing")])
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a run directory" in done.stderr
    assert not (tmp_path / "nothing").exists()
