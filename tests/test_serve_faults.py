"""Labels under load and through a crash: 32 labellers at once, then kill -9 of `tfpref serve` in the
middle of labelling. Every label the server acknowledged is in the file exactly once, and the file
stays readable as training data. Latencies are printed, never asserted."""
import collections
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from tfpref.cli import train_main
from tfpref.data.preferences import load_preferences
from tfpref.serve.settings import ServeSettings
from tfpref.training.export import export_model

from helpers import REPO, TINY_FLAGS, run_cli_in_process
from serving import RunningServer, tiny_language_model

CLIENTS, SECONDS = 32, 8.0


def write_batch(path, count):
    """A `tfpref preferences export` CSV of `count` pairs to label (no sampling needed)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["id", "prompt", "completion_a", "completion_b", "preferred"])
        writer.writeheader()
        for i in range(count):
            writer.writerow({"id": i, "prompt": f"prompt {i}", "completion_a": f"a{i}", "completion_b": f"b{i}",
                             "preferred": ""})
    return str(path)


def label_until(url, labeller, deadline, acknowledged, errors, latencies=None):
    """Label items as fast as the server hands them out until `deadline`; record what was acknowledged."""
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < deadline:
            try:
                item = client.get("/label/api/next", params={"labeller": labeller}).json()["item"]
                if item is None:
                    return
                began = time.perf_counter()
                reply = client.post("/label/api/submit", json={"item_id": item["item_id"], "choice": 1})
            except httpx.HTTPError:  # the server was killed: what it acknowledged before is what counts
                return
            if latencies is not None:
                latencies.append(time.perf_counter() - began)
            if reply.status_code != 200 or not reply.json()["saved"]:
                errors.append(reply.text)
            elif not reply.json()["duplicate"]:
                acknowledged.append(item["item_id"])


def written_ids(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["item_id"] for line in f]


@pytest.fixture(scope="module")
def export_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    export_model(tiny_language_model(), str(root), 1, jit_compile=False)
    return root / "export"


@pytest.mark.slow
def test_32_labellers_at_once_lose_and_duplicate_nothing(export_base, tmp_path):
    output = tmp_path / "labels.jsonl"
    server = RunningServer(ServeSettings(model_dir=str(export_base), label_input=write_batch(tmp_path / "b.csv", 5000),
                                         label_output=str(output)))
    try:
        acknowledged, errors, latencies = [], [], []
        deadline = time.monotonic() + SECONDS
        threads = [threading.Thread(target=label_until, args=(server.url, f"labeller-{i}", deadline, acknowledged,
                                                              errors, latencies)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    ids = written_ids(output)
    print(json.dumps({"labellers": CLIENTS, "labels": len(ids), "labels_per_second": round(len(ids) / SECONDS, 1),
                      "submit_p50_ms": round(1e3 * float(np.percentile(latencies, 50)), 1),
                      "submit_p99_ms": round(1e3 * float(np.percentile(latencies, 99)), 1), "errors": len(errors)}))
    assert not errors, errors[:3]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(acknowledged) and len(ids) > CLIENTS
    assert len(load_preferences(str(output)).items) == len(ids)
    # The loop closes: what the labellers wrote trains a reward model as it is.
    trained = run_cli_in_process(train_main, [*TINY_FLAGS, "--objective", "reward_model", "--data", str(output),
                                              "--train_steps", "2", "--model_dir", str(tmp_path / "rm")])
    assert trained.returncode == 0, trained.stderr


def start_server(export_base, batch, output):
    process = subprocess.Popen([sys.executable, "-m", "tfpref.serve", "--model_dir", str(export_base), "--port", "0",
                                "--label_input", batch, "--label_output", str(output)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
    assert found, (line, process.stderr.read() if process.poll() is not None else "")
    return process, found.group(1)


@pytest.mark.slow
def test_kill_9_while_labelling_loses_no_acknowledged_label(export_base, tmp_path):
    batch, output = write_batch(tmp_path / "b.csv", 3000), tmp_path / "labels.jsonl"
    process, url = start_server(export_base, batch, output)
    acknowledged, errors = [], []
    try:
        threads = [threading.Thread(target=label_until, args=(url, f"l{i}", time.monotonic() + 60, acknowledged,
                                                              errors)) for i in range(4)]
        for thread in threads:
            thread.start()
        while len(acknowledged) < 50:  # in the middle of labelling
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        for thread in threads:
            thread.join(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert not errors, errors[:3]
    before = written_ids(output)  # a torn last line would fail to parse here only if it had a newline
    counts = collections.Counter(before)
    assert all(counts[i] == 1 for i in acknowledged)  # every acknowledged label, exactly once
    assert max(counts.values()) == 1

    restarted, url = start_server(export_base, batch, output)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            progress = client.get("/label/api/next", params={"labeller": "after"}).json()["progress"]
            assert progress["done"] == len(before)  # labelling resumes where it stopped
    finally:
        restarted.send_signal(signal.SIGINT)
        restarted.wait(60)
    assert len(load_preferences(str(output)).items) == len(before)
