"""Generation throughput of `tfpref serve` against the in-process compiled sampler, same model.

Shape: requests of batch 8, prompt 32 tokens (BOS + 31 random printable bytes), 64 new tokens,
greedy, on the default tfpref transformer (d_model 128, 4 layers, 4 heads, ff 512, byte vocabulary)
with random weights.

Configurations:
    in_process: `tfpref.models.sampling.Sampler` (XLA), called in this process on the batch of 8
        (the reference), and on 64 rows (the batch the server forms from 32 clients: how much of the
        served throughput is the model's own scaling); it never stops early (`eos_id=None`), so a
        call makes exactly rows x 64 tokens.
    served, 1 client and 32 clients: the model exported (`export_model`, XLA-compiled) and served by
        `python -m tfpref.serve` in a child process, as users run it; each client (a thread here,
        with its own HTTP connection) sends the batch of 8 as one columnar generate request, over and
        over, for --seconds. With 32 clients the server batches up to --max_batch 64 rows (8
        requests) into one model call. The export stops a row at the model's end token and runs
        until its call's longest row is done, so a response counts rows x its longest completion,
        the decoding steps it cost (as benchmarks/generate_throughput.py counts the export).
The server is warmed up first (one request per batch bucket: 8, 16, 32 and 64 rows). Timings
include HTTP, JSON and the in-graph tokenizer; the clients share the machine's cores with the server.

Output: one JSON object per line on stdout (per configuration, then a summary with served / in-process
ratios); progress on stderr.

Usage:
    python benchmarks/serve_throughput.py             # 20 s per served configuration
    python benchmarks/serve_throughput.py --quick     # 4 s (smoke test)
"""
import tfpref  # noqa: F401  (first: silences TensorFlow's CUDA-probe noise on import)

import argparse
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

import bench_common  # benchmarks/ is on sys.path when a script there runs
from bench_common import BackgroundLoad, emit

from tfpref.config import ModelConfig
from tfpref.data.tokenizer import BOS_ID
from tfpref.models import CausalLM, build_model
from tfpref.models.sampling import Sampler
from tfpref.training.export import export_model

BENCHMARK = "serve_throughput"
BATCH, PROMPT_LEN, NEW_TOKENS, MAX_BATCH = 8, 32, 64, 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(message):
    bench_common.log(BENCHMARK, message)


def prompt_texts(seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(map(chr, rng.integers(32, 127, PROMPT_LEN - 1))) for _ in range(BATCH)]


def in_process(model, prompts, calls):
    """Median seconds of a Sampler call on `prompts`, after a warm-up call (tracing, XLA)."""
    ids = np.array([[BOS_ID, *p.encode("ascii")] for p in prompts], np.int32)
    mask = np.ones_like(ids, bool)
    sampler = Sampler(model, NEW_TOKENS, eos_id=None, jit_compile=True)
    sampler(ids, mask, temperature=0.0)
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        out = sampler(ids, mask, temperature=0.0)
        times.append(time.perf_counter() - began)
        assert out["lengths"].min() == NEW_TOKENS
    return statistics.median(times)


class Server:
    """`python -m tfpref.serve` in a child process, on a free port."""

    def __init__(self, model_dir):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tfpref.serve", "--model_dir", model_dir, "--port", "0",
             "--max_batch", str(MAX_BATCH), "--max_new_tokens", str(NEW_TOKENS)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 300)
        line = self.process.stdout.readline() if ready else ""
        found = re.search(r" at (http://\S+)/v1/models/", line)
        if not found:
            self.stop()
            raise RuntimeError(f"the server did not start: {line!r}")
        self.url = found.group(1)

    def counters(self):
        model = httpx.get(f"{self.url}/healthz").json()["models"]["tfpref"]
        return model["requests_served"], model["model_calls"]

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def generate_body(prompts, rows=BATCH):
    return {"signature_name": "generate", "inputs": {
        "prompts": (prompts * (rows // len(prompts) + 1))[:rows], "max_new_tokens": NEW_TOKENS,
        "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}}


def served(server, prompts, clients, seconds):
    """(decoding steps x rows per second, latencies, errors, requests per model call) of `clients`
    clients sending the batch for `seconds`."""
    served_before, calls_before = server.counters()
    latencies, tokens, errors = [], [], []
    deadline = time.monotonic() + seconds

    def client_loop():
        with httpx.Client(base_url=server.url, timeout=300) as client:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                response = client.post("/v1/models/tfpref:predict", json=generate_body(prompts))
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                num_tokens = response.json()["outputs"]["num_tokens"]
                tokens.append(len(num_tokens) * max(num_tokens))

    began = time.perf_counter()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    served_after, calls_after = server.counters()
    per_call = (served_after - served_before) / max(calls_after - calls_before, 1)
    return sum(tokens) / elapsed, latencies, errors, per_call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="how long each served configuration runs (default 20, --quick 4)")
    parser.add_argument("--calls", type=int, default=10, help="timed in-process calls")
    parser.add_argument("--quick", action="store_true", help="a few seconds per configuration (smoke test)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (4.0 if args.quick else 20.0)

    background = BackgroundLoad()
    model = build_model(ModelConfig(model="transformer", d_model=128, num_layers=4, num_heads=4, ff_dim=512), seed=0)
    prompts = prompt_texts()
    records = []
    for rows in (BATCH, MAX_BATCH):
        log(f"in-process sampler, {rows} rows")
        median = in_process(model, (prompts * (rows // BATCH))[:rows], 2 if args.quick else args.calls)
        records.append({"benchmark": BENCHMARK, "impl": "in_process", "rows": rows,
                        "new_tokens_per_second": round(rows * NEW_TOKENS / median, 1),
                        "call_ms": round(1e3 * median, 1)})
        emit(records[-1])
    reference = records[0]["new_tokens_per_second"]

    model_dir = tempfile.mkdtemp(prefix="serve_throughput_")
    log("exporting the model")
    export_model(CausalLM(model), model_dir, step=1)
    log("starting python -m tfpref.serve")
    server = Server(model_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            for rows in (8, 16, 32, 64):  # compile each batch bucket the 32 clients will reach
                log(f"warm-up: {rows} rows")
                response = client.post("/v1/models/tfpref:predict", json=generate_body(prompts, rows))
                assert response.status_code == 200, response.text
        for clients in (1, 32):
            log(f"{clients} client(s) for {seconds:g} s")
            rate, latencies, errors, per_call = served(server, prompts, clients, seconds)
            records.append({"benchmark": BENCHMARK, "impl": "served", "clients": clients, "rows": BATCH,
                            "new_tokens_per_second": round(rate, 1), "requests": len(latencies),
                            "errors": len(errors), "p50_ms": round(1e3 * float(np.percentile(latencies, 50)), 1),
                            "p99_ms": round(1e3 * float(np.percentile(latencies, 99)), 1),
                            "requests_per_model_call": round(per_call, 2)})
            emit(records[-1])
    finally:
        server.stop()
        shutil.rmtree(model_dir, ignore_errors=True)

    summary = {"benchmark": BENCHMARK, "summary": True, "batch": BATCH, "prompt_len": PROMPT_LEN,
               "new_tokens": NEW_TOKENS, "max_batch": MAX_BATCH}
    for record in records:
        if record["impl"] == "served":
            summary[f"served_{record['clients']}_vs_in_process"] = round(record["new_tokens_per_second"] / reference, 2)
    summary["in_process_64_rows_vs_8"] = round(records[1]["new_tokens_per_second"] / reference, 2)
    summary.update(quick=args.quick, background_cpu_cores=background.cores(), cpu_count=os.cpu_count())
    emit(summary)


if __name__ == "__main__":
    main()
