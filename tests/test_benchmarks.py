"""Smoke tests of the benchmarks: they run and print the JSON lines their docstrings promise."""
import json
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.slow
def test_rl_throughput_times_a_tfpref_rollout_and_splits_its_time(tmp_path):
    finished = subprocess.run([sys.executable, "benchmarks/rl_throughput.py", "--quick", "--no_peer", "--algorithms",
                               "rloo", "--rollouts", "1", "--warmup", "1", "--work_dir", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    record, summary = [json.loads(line) for line in finished.stdout.splitlines()]
    assert record["impl"] == "tfpref" and record["algorithm"] == "rloo" and record["completions_per_second"] > 0
    assert set(record["seconds_per_rollout"]) == {"sampling", "logprobs", "scoring", "update", "other"}
    assert 0 < record["mean_completion_length"] <= record["max_new_tokens"] == 64
    assert summary["summary"] and summary["tfpref_rloo_completions_per_second"] == record["completions_per_second"]
