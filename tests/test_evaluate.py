"""evaluate.py: held-out LM metrics, classification reports, files written, bad input."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tfpref.cli import evaluate_main
from tfpref.evaluation.metrics import classification_report

from helpers import REPO, run_cli_in_process, tiny_config, write_tiny_corpus
from test_classify import write_labeled


def run_evaluate(args):
    """The real `evaluate.py` in a new process (the in-process tests cover what it computes)."""
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


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny trained language-model run directory, shared by the tests below."""
    directory = tmp_path_factory.mktemp("lm")
    corpus = write_tiny_corpus(str(directory))
    from tfpref.training.run import train

    config = tiny_config(directory / "run", corpus, train_steps=20)
    train(config, show_progress=False)
    return directory / "run"


@pytest.mark.slow
def test_evaluate_a_language_model_run(lm_run):
    done = run_evaluate(["--model_dir", str(lm_run), "--split", "test", "--num_samples", "5",
                         "--max_new_tokens", "24"])
    assert done.returncode == 0, done.stderr
    assert "perplexity" in done.stdout and "bits_per_byte" in done.stdout and "samples.jsonl" in done.stdout
    report = json.load(open(lm_run / "eval" / "metrics.json"))
    assert report["split"] == "test" and report["step"] == 20 and report["examples"] > 0
    metrics = report["metrics"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]), rel=1e-6)
    assert 0 < metrics["nll"] < math.log(272)  # trained: better than uniform over the vocabulary
    # Default prompts: held-out chunks' first lines, the rest of each chunk as reference.
    samples = [json.loads(line) for line in open(lm_run / "eval" / "samples.jsonl")]
    assert len(samples) == report["samples"]["count"] == min(5, report["examples"])
    for sample in samples:
        assert sample["prompt"] and "reference" in sample and 0 < sample["num_tokens"] <= 24
        assert len(sample["completion"]) <= sample["num_tokens"]  # a byte is at most a character
    for name in ("bleu", "rouge_l", "distinct_1", "distinct_2", "self_bleu", "sample_tokens"):
        assert 0 <= metrics[name] <= (1 if name != "sample_tokens" else 24), name


@pytest.mark.slow
def test_evaluate_samples_a_prompts_file_reproducibly(lm_run, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p, "reference": r}) for p, r in
                                 [("def add(a, b):\n", "    return a + b\n"), ("import ", "os\n"),
                                  ("class A:\n", "    pass\n")]) + "\n")
    args = ["--model_dir", str(lm_run), "--prompts", str(prompts), "--max_new_tokens", "16",
            "--temperature", "0.8", "--top_p", "0.9", "--seed", "3", "--max_batches", "1"]
    assert evaluate_main(args) == 0  # in-process: the subprocess tests above cover the CLI's process
    samples = (lm_run / "eval" / "samples.jsonl").read_text()
    assert [json.loads(line)["prompt"] for line in samples.splitlines()] == ["def add(a, b):\n", "import ",
                                                                         "class A:\n"]
    assert evaluate_main(args) == 0
    assert (lm_run / "eval" / "samples.jsonl").read_text() == samples  # same seed, same samples
    report = json.load(open(lm_run / "eval" / "metrics.json"))
    assert report["samples"]["temperature"] == 0.8 and report["samples"]["prompts"] == str(prompts)


def test_bad_prompts_file_is_a_one_line_error_and_keeps_earlier_results(lm_run, tmp_path, capsys):
    assert evaluate_main(["--model_dir", str(lm_run), "--max_batches", "1", "--num_samples", "2"]) == 0
    before = (lm_run / "eval" / "metrics.json").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    done = run_cli_in_process(evaluate_main, ["--model_dir", str(lm_run), "--prompts", str(bad)])
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"{bad}:2: field 'prompt'" in done.stderr
    for flags in (["--top_p", "0"], ["--temperature", "-1"], ["--prompts", str(tmp_path / "missing")]):
        assert evaluate_main(["--model_dir", str(lm_run), *flags]) == 2, flags
        assert capsys.readouterr().err.strip().count("\n") == 0, flags
    assert (lm_run / "eval" / "metrics.json").read_text() == before


def test_evaluate_a_classifier_reports_precision_recall_f1_and_confusion(tmp_path):
    from tfpref.training.run import train

    corpus = write_tiny_corpus(str(tmp_path))
    lm = tiny_config(tmp_path / "lm", corpus, train_steps=2)
    train(lm, show_progress=False)
    labeled = write_labeled(tmp_path / "labeled.jsonl")
    classifier = tiny_config(tmp_path / "clf", labeled, objective="classify", init_from=str(tmp_path / "lm"),
                             freeze_backbone=True, train_steps=30, batch_size=16, learning_rate=3e-2)
    train(classifier, show_progress=False)
    done = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "clf"), "--split", "test"])
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
