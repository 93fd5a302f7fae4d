"""Killing a run and re-running the same command continues it as if nothing had happened."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, TINY_FLAGS, run_train, write_tiny_corpus

STEPS = 600


@pytest.fixture(scope="module")
def command(tmp_path_factory):
    corpus = write_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    # Dropout on, so the restored RNG state matters too; XLA on, as users run.
    return [*TINY_FLAGS, "--data", corpus, "--train_steps", str(STEPS), "--checkpoint_every", "50",
            "--log_every", "50", "--eval_every", "1000", "--dropout", "0.1", "--jit_compile"]


@pytest.fixture(scope="module")
def uninterrupted(command, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    done = run_train([*command, "--model_dir", str(model_dir)])
    assert done.returncode == 0, done.stderr
    return json.load(open(model_dir / "train_result.json"))


def start_and_wait_for_checkpoint(command, model_dir, at_least_step):
    process = subprocess.Popen([sys.executable, "train.py", *command, "--model_dir", str(model_dir)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        steps = [int(re.search(r"ckpt-(\d+)\.index$", p).group(1))
                 for p in glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index"))]
        if steps and max(steps) >= at_least_step:
            return process
        if process.poll() is not None:
            break
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no checkpoint at step {at_least_step} appeared: {process.communicate()[1][-2000:]}")


def kill_9_and_rerun(command, model_dir, at_least_step=100):
    """The train result of `command` killed with SIGKILL once it has checkpointed `at_least_step`, then
    run again to its end (which must say it resumed)."""
    process = start_and_wait_for_checkpoint(command, model_dir, at_least_step)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (model_dir / "train_result.json").exists(), "the run finished before it was killed"
    resumed = run_train([*command, "--model_dir", str(model_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"Resuming .* from step \d+", resumed.stdout)
    return json.load(open(model_dir / "train_result.json"))


@pytest.mark.slow
def test_kill_9_then_rerun_matches_an_uninterrupted_run(command, uninterrupted, tmp_path):
    result = kill_9_and_rerun(command, tmp_path / "killed")
    assert result["step"] == STEPS
    assert result["loss"] == pytest.approx(uninterrupted["loss"], abs=1e-5)
    assert result["validation_nll"] == pytest.approx(uninterrupted["validation_nll"], abs=1e-5)


@pytest.mark.slow
def test_sigterm_checkpoints_at_once_and_the_run_resumes_from_there(command, uninterrupted, tmp_path):
    model_dir = tmp_path / "terminated"
    process = start_and_wait_for_checkpoint(command, model_dir, at_least_step=50)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    stopped_at = int(re.search(r"Stopped by SIGTERM at step (\d+)", stdout).group(1))
    assert 50 <= stopped_at < STEPS
    assert (model_dir / "checkpoints" / f"ckpt-{stopped_at}.index").exists()

    resumed = run_train([*command, "--model_dir", str(model_dir)])
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {stopped_at}" in resumed.stdout
    result = json.load(open(model_dir / "train_result.json"))
    assert result["loss"] == pytest.approx(uninterrupted["loss"], abs=1e-5)
