"""A keras-hub preset run with LoRA, killed with SIGKILL and started again, ends as an uninterrupted run does."""
import json

import pytest

from helpers import run_train, write_tiny_corpus
from keras_hub_presets import save_tiny_gpt2_preset
from test_resume import kill_9_and_rerun

STEPS = 600


@pytest.fixture(scope="module")
def command(tmp_path_factory):
    corpus = write_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    preset = save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")
    return ["--model", "keras_hub", "--preset", preset, "--lora_rank", "2", "--objective", "mle", "--data", corpus,
            "--seq_len", "32", "--batch_size", "4", "--learning_rate", "3e-3", "--warmup_steps", "2",
            "--train_steps", str(STEPS), "--checkpoint_every", "50", "--log_every", "50", "--eval_every", "1000",
            "--eval_batches", "2", "--no_progress", "--no-export", "--jit_compile"]


@pytest.mark.slow
def test_kill_9_then_rerun_of_a_lora_preset_run_matches_an_uninterrupted_run(command, tmp_path):
    uninterrupted = run_train([*command, "--model_dir", str(tmp_path / "uninterrupted")])
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    want = json.load(open(tmp_path / "uninterrupted" / "train_result.json"))

    result = kill_9_and_rerun(command, tmp_path / "killed")
    assert result["step"] == STEPS
    assert result["loss"] == pytest.approx(want["loss"], abs=1e-5)
    assert result["validation_nll"] == pytest.approx(want["validation_nll"], abs=1e-5)
