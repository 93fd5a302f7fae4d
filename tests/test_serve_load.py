"""A small load test of `tfpref serve`: 32 concurrent clients for about 10 s against generate on an
XLA-compiled export (what training writes). Prints the latency percentiles and throughput; asserts
that every request was answered, never how fast (benchmarks/serve_throughput.py measures speed)."""
import json
import threading
import time

import httpx
import numpy as np
import pytest

from tfpref.serve.settings import ServeSettings
from tfpref.training.export import export_model

from serving import RunningServer, tiny_language_model

CLIENTS, SECONDS = 32, 10.0
# One setting for every client, as a labelling page would send: their requests can share calls.
SETTINGS = {"max_new_tokens": 16, "temperature": 0.8, "top_k": 0, "top_p": 0.95, "seed": 0}
PROMPTS = ["def f(x):\n", "import os\n", "class A:\n", "for i in ", "return "]


@pytest.mark.slow
def test_32_concurrent_clients_are_all_answered(tmp_path):
    export_model(tiny_language_model(), str(tmp_path), 1)
    server = RunningServer(ServeSettings(model_dir=str(tmp_path), port=0))
    try:
        with httpx.Client(base_url=server.url, timeout=300) as client:  # compile every batch bucket first
            for rows in (1, 2, 4, 8, 16, 32):
                response = client.post("/v1/models/tfpref:predict",
                                       json={"inputs": {"prompts": PROMPTS[:1] * rows, **SETTINGS}})
                assert response.status_code == 200, response.text
        batcher = server.batcher()
        served, calls = batcher.requests_served, batcher.calls
        latencies, errors = [], []
        deadline = time.monotonic() + SECONDS

        def client_loop(index):
            with httpx.Client(base_url=server.url, timeout=120) as client:
                sent = 0
                while time.monotonic() < deadline:
                    body = {"instances": [{"prompts": PROMPTS[(index + sent) % len(PROMPTS)], **SETTINGS}]}
                    began = time.perf_counter()
                    try:
                        response = client.post("/v1/models/tfpref:predict", json=body)
                        if response.status_code != 200:
                            errors.append(f"{response.status_code}: {response.text}")
                        elif len(response.json()["predictions"]) != 1:
                            errors.append(f"wrong answer: {response.text}")
                    except httpx.HTTPError as e:
                        errors.append(repr(e))
                    latencies.append(time.perf_counter() - began)
                    sent += 1

        began = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        requests, model_calls = batcher.requests_served - served, batcher.calls - calls
        print(json.dumps({"clients": CLIENTS, "seconds": round(elapsed, 1), "requests": len(latencies),
                          "errors": len(errors), "requests_per_second": round(len(latencies) / elapsed, 1),
                          "p50_ms": round(1e3 * float(np.percentile(latencies, 50)), 1),
                          "p99_ms": round(1e3 * float(np.percentile(latencies, 99)), 1),
                          "model_calls": model_calls, "requests_per_call": round(requests / max(model_calls, 1), 1)}))
        assert not errors, errors[:3]
        assert requests == len(latencies) >= CLIENTS
    finally:
        server.stop()
