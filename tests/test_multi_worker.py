"""--strategy=multi_worker: two worker processes on 127.0.0.1 train exactly like one worker."""
import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import REPO, TINY_FLAGS, train_in_process, write_tiny_corpus


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result(run_dir):
    with open(os.path.join(run_dir, "train_result.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_two_workers_match_one_worker_and_their_checkpoint_resumes_on_one(tmp_path):
    corpus = write_tiny_corpus(str(tmp_path))
    flags = [*TINY_FLAGS, "--data", corpus, "--seed", "1", "--checkpoint_every", "4"]
    shared_dir = tmp_path / "two_workers"  # one run directory, as on a shared file system
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, "train.py", *flags, "--train_steps", "8", "--strategy", "multi_worker",
             "--model_dir", str(shared_dir)], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err
    train_in_process([*flags, "--train_steps", "8", "--model_dir", str(tmp_path / "one_worker")])

    two, single = result(shared_dir), result(tmp_path / "one_worker")
    assert two["step"] == single["step"] == 8
    for key in ("loss", "validation_loss"):
        assert two[key] == pytest.approx(single[key], rel=1e-4), key
    # Only the chief (worker 0) wrote checkpoints: the same ones a single worker writes.
    assert sorted(os.listdir(shared_dir / "checkpoints")) == sorted(os.listdir(tmp_path / "one_worker" / "checkpoints"))

    # The two-worker checkpoint resumes on one worker and continues exactly like the single run.
    for run_dir in (shared_dir, tmp_path / "one_worker"):
        train_in_process([*flags, "--train_steps", "12", "--strategy", "default", "--model_dir", str(run_dir)])
    assert result(shared_dir)["loss"] == pytest.approx(result(tmp_path / "one_worker")["loss"], rel=1e-4)
