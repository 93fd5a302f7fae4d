"""Frozen-backbone fine-tuning of a classifier head on a pretrained run."""
import json

import numpy as np
import pytest
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.cli import train_main
from tfpref.data.labeled import PEP8_CLASSES, pep8_labels

from helpers import TINY_FLAGS, run_cli_in_process, train_in_process, write_tiny_corpus


def write_labeled(path, count=400):
    # A learnable rule: snippets with spaces around '=' are one class, without the other.
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            clean = i % 2 == 0
            text = f"value_{i} = {i}\n" if clean else f"value_{i}={i}\n"
            f.write(json.dumps({"text": text, "label": "spaced" if clean else "tight", "id": i}) + "\n")
    return str(path)


def test_pep8_labels_mark_clean_and_violating_code():
    assert pep8_labels(["x = 1\n", "x=1\n", "def f( a ):\n  return a\n"]) == [
        PEP8_CLASSES[0], PEP8_CLASSES[1], PEP8_CLASSES[1]]


@pytest.mark.slow
def test_frozen_backbone_classifier_trains_only_its_head(tmp_path):
    corpus = write_tiny_corpus(str(tmp_path))
    train_in_process([*TINY_FLAGS, "--data", corpus, "--train_steps", "3", "--model_dir", str(tmp_path / "lm")])
    labeled = write_labeled(tmp_path / "labeled.jsonl")
    tuned = run_cli_in_process(train_main, [
        "--data", labeled, "--objective", "classify", "--init_from", str(tmp_path / "lm"), "--freeze_backbone",
        "--train_steps", "60", "--batch_size", "16", "--seq_len", "32", "--learning_rate", "3e-2", "--dropout", "0.1",
        "--eval_every", "30", "--no_progress", "--no-export", "--model_dir", str(tmp_path / "classifier")])
    assert tuned.returncode == 0, tuned.stderr
    assert "Initialising from" in tuned.stdout

    before = tf.train.load_checkpoint(str(tmp_path / "lm" / "checkpoints"))
    after = tf.train.load_checkpoint(str(tmp_path / "classifier" / "checkpoints"))
    backbone = [n for n in before.get_variable_to_shape_map() if n.startswith("weights/")]
    assert len(backbone) > 10
    for name in backbone:  # bit-for-bit unchanged
        np.testing.assert_array_equal(before.get_tensor(name), after.get_tensor(name), err_msg=name)
    head = [n for n in after.get_variable_to_shape_map() if n.startswith("weights/classifier")]
    assert head, "the classifier head is checkpointed"

    config = json.load(open(tmp_path / "classifier" / "config.json"))
    assert config["classes"] == ["spaced", "tight"]
    assert config["model"]["d_model"] == 32  # the architecture came from --init_from
    assert config["model"]["dropout"] == 0.1  # but the dropout from the flag
    result = json.load(open(tmp_path / "classifier" / "train_result.json"))
    assert result["validation_accuracy"] > 0.9
