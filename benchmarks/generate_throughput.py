"""Generation throughput of tfpref's sampler against keras-hub's GPT2CausalLM.generate.

Shape: batch 8, prompt 32 tokens, 224 new tokens (256 in all), on the default tfpref transformer
(d_model 128, 4 layers, 4 heads, ff 512, byte vocabulary of 272) with random weights, and a
keras-hub GPT-2 of the same shape. Generation never stops early (tfpref: `eos_id=None`;
keras-hub: `stop_token_ids=None`), so every call produces exactly 8 x 224 tokens.

Configurations, timed in interleaved rounds after warm-up calls (tracing and XLA compilation):
    tfpref cached, greedy and top-k (k=5) sampling, with and without XLA;
    tfpref uncached (the whole sequence recomputed every step), greedy, XLA;
    keras-hub GPT2CausalLM.generate (its own KV cache, XLA as it compiles by default), with its
        "greedy" and "top_k" (k=5) samplers;
    tfpref's export (`export_model`): the SavedModel's `generate` signature, greedy and top-k,
        called in a fresh process that does not import tfpref (plain TensorFlow), after a warm-up
        call, as a server runs it. Its prompts are 31 random printable bytes after BOS (the same 32
        tokens); it stops rows at the model's end token, so its tokens per second count the
        decoding steps of its longest row for every row (the loop carries finished rows along).
The others run in this process. A call is timed from Python inputs to NumPy outputs;
new_tokens_per_second uses the median call. The summary gives tfpref cached / uncached (target
>= 10), tfpref / keras-hub for the same sampler (target >= 2), and export / in-process for the
same sampler (target 1.0: the export is as fast as the compiled sampler).

Output: one JSON object per line on stdout; progress on stderr.

Usage:
    python benchmarks/generate_throughput.py            # 10 timed calls per configuration
    python benchmarks/generate_throughput.py --quick    # 2 timed calls (smoke test)
"""
import tfpref  # noqa: F401  (first: silences TensorFlow's CUDA-probe noise on import)

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

import bench_common  # benchmarks/ is on sys.path when a script there runs
from bench_common import BackgroundLoad, emit

from tfpref.config import ModelConfig
from tfpref.data.tokenizer import BOS_ID, NUM_SPECIAL, VOCAB_SIZE
from tfpref.models import CausalLM, build_model
from tfpref.models.sampling import Sampler
from tfpref.training.export import export_model

BENCHMARK = "generate_throughput"
BATCH, PROMPT_LEN, NEW_TOKENS = 8, 32, 224
TOP_K = 5
TARGET_CACHE_SPEEDUP, TARGET_KERAS_HUB_SPEEDUP = 10.0, 2.0


def log(message):
    bench_common.log(BENCHMARK, message)


def random_prompts(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(NUM_SPECIAL, VOCAB_SIZE, size=(BATCH, PROMPT_LEN), dtype=np.int32)
    ids[:, 0] = BOS_ID
    return ids


class TfprefRunner:
    def __init__(self, model, sampler_name, use_cache, jit_compile, prompts):
        self.impl, self.sampler_name = "tfpref" if use_cache else "tfpref_uncached", sampler_name
        self.use_cache, self.jit_compile = use_cache, jit_compile
        self.sampler = Sampler(model, NEW_TOKENS, eos_id=None, use_cache=use_cache,
                               jit_compile=jit_compile)
        self.prompts, self.mask = prompts, np.ones_like(prompts, bool)
        self.settings = {"temperature": 0.0} if sampler_name == "greedy" else {"top_k": TOP_K}
        self.calls = 0

    def run(self):
        self.calls += 1
        out = self.sampler(self.prompts, self.mask, seed=self.calls, **self.settings)
        assert out["lengths"].min() == NEW_TOKENS
        return out["tokens"]


class KerasHubRunner:
    def __init__(self, sampler_name, prompts):
        import keras_hub  # late: only the reference needs it

        self.impl, self.sampler_name, self.use_cache, self.jit_compile = (
            "keras_hub_gpt2_generate", sampler_name, True, True)
        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=VOCAB_SIZE, num_layers=4, num_heads=4, hidden_dim=128,
            intermediate_dim=512, max_sequence_length=PROMPT_LEN + NEW_TOKENS, dropout=0.0)
        self.model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        sampler = (keras_hub.samplers.GreedySampler() if sampler_name == "greedy"
                   else keras_hub.samplers.TopKSampler(k=TOP_K))
        self.model.compile(sampler=sampler)
        total = PROMPT_LEN + NEW_TOKENS
        token_ids = np.zeros((BATCH, total), np.int32)
        token_ids[:, :PROMPT_LEN] = prompts
        mask = np.zeros((BATCH, total), bool)
        mask[:, :PROMPT_LEN] = True
        self.inputs = {"token_ids": token_ids, "padding_mask": mask}

    def run(self):
        out = self.model.generate(self.inputs, stop_token_ids=None)
        assert out["padding_mask"].all()
        return out["token_ids"][:, PROMPT_LEN:]


# Runs in a fresh interpreter (plain TensorFlow): loads the export, warms up, times the calls.
EXPORT_CLIENT = r"""
import json, sys, time
import tensorflow as tf
assert "tfpref" not in sys.modules
path, prompts, settings, calls = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
generate = tf.saved_model.load(path).signatures["generate"]
inputs = {"prompts": tf.constant([p.encode("latin-1") for p in prompts]), "max_new_tokens": tf.constant(settings[0]),
          "temperature": tf.constant(settings[1]), "top_k": tf.constant(settings[2]), "top_p": tf.constant(1.0),
          "seed": tf.constant(0)}
generate(**inputs)
times, steps = [], []
for call in range(calls):
    inputs["seed"] = tf.constant(call + 1)
    began = time.perf_counter()
    out = {name: value.numpy() for name, value in generate(**inputs).items()}
    times.append(time.perf_counter() - began)
    steps.append(int(out["num_tokens"].max()))
print(json.dumps({"times": times, "steps": steps}))
"""


class ExportRunner:
    """The exported `generate`, timed in a child process per round (see EXPORT_CLIENT)."""

    def __init__(self, path, sampler_name):
        self.impl, self.sampler_name, self.use_cache, self.jit_compile = "tfpref_export", sampler_name, True, True
        rng = np.random.default_rng(1)
        self.prompts = ["".join(map(chr, rng.integers(32, 127, PROMPT_LEN - 1))) for _ in range(BATCH)]
        self.settings = [NEW_TOKENS, 0.0, 0] if sampler_name == "greedy" else [NEW_TOKENS, 1.0, TOP_K]
        self.path, self.steps = path, []

    def timed_calls(self, count):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, "-c", EXPORT_CLIENT, self.path, json.dumps(self.prompts),
                               json.dumps(self.settings), str(count)],
                              capture_output=True, text=True, env=env, cwd="/", check=True)
        out = json.loads(done.stdout.strip().splitlines()[-1])
        self.steps += out["steps"]
        return out["times"]


def tfpref_model():
    config = ModelConfig(model="transformer", d_model=128, num_layers=4, num_heads=4, ff_dim=512)
    return build_model(config, seed=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None,
                        help="timed calls per configuration (default 10, --quick 2); the "
                             "uncached configuration gets a third of them (at least 1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="a few calls (smoke test)")
    args = parser.parse_args(argv)
    calls = max(1, args.calls if args.calls is not None else (2 if args.quick else 10))
    rounds = max(1, min(args.rounds, calls))

    background = BackgroundLoad()
    prompts = random_prompts()
    model = tfpref_model()
    runners = []
    for sampler_name in ("greedy", "top_k"):
        for jit in (True, False):
            runners.append(TfprefRunner(model, sampler_name, True, jit, prompts))
    runners.append(TfprefRunner(model, "greedy", False, True, prompts))
    for sampler_name in ("greedy", "top_k"):
        runners.append(KerasHubRunner(sampler_name, prompts))
    export_dir = tempfile.mkdtemp(prefix="generate_throughput_")
    log("exporting the tfpref model")
    path = export_model(CausalLM(model), export_dir, step=0)
    runners += [ExportRunner(path, sampler_name) for sampler_name in ("greedy", "top_k")]

    for runner in runners:
        if not isinstance(runner, ExportRunner):  # the export warms up in each child process
            log(f"warm-up {runner.impl} {runner.sampler_name} jit_compile={runner.jit_compile}")
            runner.run()
    times = {id(runner): [] for runner in runners}
    for r in range(rounds):
        for runner in runners:
            share = calls if runner.use_cache else max(1, calls // 3)
            count = share // rounds + (1 if r < share % rounds else 0)
            log(f"round {r + 1}/{rounds}: {runner.impl} {runner.sampler_name} "
                f"jit_compile={runner.jit_compile}, {count} calls")
            if isinstance(runner, ExportRunner):
                times[id(runner)] += runner.timed_calls(count)
                continue
            for _ in range(count):
                began = time.perf_counter()
                runner.run()
                times[id(runner)].append(time.perf_counter() - began)

    records = []
    for runner in runners:
        median = statistics.median(times[id(runner)])
        steps = statistics.median(runner.steps) if isinstance(runner, ExportRunner) else NEW_TOKENS
        records.append({"benchmark": BENCHMARK, "impl": runner.impl, "sampler": runner.sampler_name,
                        "jit_compile": runner.jit_compile, "use_cache": runner.use_cache,
                        "new_tokens_per_second": round(BATCH * steps / median, 1), "decoding_steps": steps,
                        "call_ms": round(1e3 * median, 1), "call_ms_min": round(1e3 * min(times[id(runner)]), 1),
                        "timed_calls": len(times[id(runner)]), "batch": BATCH,
                        "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS})
        emit(records[-1])

    def best(impl, sampler_name):
        return max((r for r in records if r["impl"] == impl and r["sampler"] == sampler_name),
                   key=lambda r: r["new_tokens_per_second"])

    summary = {"benchmark": BENCHMARK, "summary": True}
    cache_speedup = (best("tfpref", "greedy")["new_tokens_per_second"]
                     / best("tfpref_uncached", "greedy")["new_tokens_per_second"])
    summary.update(cached_vs_uncached=round(cache_speedup, 2), target_cached_vs_uncached=TARGET_CACHE_SPEEDUP,
                   meets_cache_target=bool(cache_speedup >= TARGET_CACHE_SPEEDUP))
    for sampler_name in ("greedy", "top_k"):
        ours = best("tfpref", sampler_name)
        ratio = ours["new_tokens_per_second"] / best("keras_hub_gpt2_generate", sampler_name)["new_tokens_per_second"]
        summary[f"{sampler_name}_vs_keras_hub"] = round(ratio, 2)
        summary[f"{sampler_name}_tfpref_jit_compile"] = ours["jit_compile"]
        export = best("tfpref_export", sampler_name)["new_tokens_per_second"]
        summary[f"{sampler_name}_export_vs_in_process"] = round(export / ours["new_tokens_per_second"], 2)
        summary[f"{sampler_name}_export_new_tokens_per_second"] = export
    summary.update(target_vs_keras_hub=TARGET_KERAS_HUB_SPEEDUP,
                   meets_keras_hub_target=bool(min(summary["greedy_vs_keras_hub"],
                                                   summary["top_k_vs_keras_hub"]) >= TARGET_KERAS_HUB_SPEEDUP),
                   quick=args.quick, background_cpu_cores=background.cores(), cpu_count=os.cpu_count())
    emit(summary)


if __name__ == "__main__":
    main()
