"""The int8 export against the float one: size, held-out perplexity, log-prob error and speed.

A run of the default transformer (d_model 128, 4 layers, 4 heads, ff 512, bytes; 0.8M parameters)
is trained with MLE on the standard library (400 steps, about 4 minutes on 2 cores; --run_dir reuses
any finished language-model run instead), then exported as `evaluate.py --export` does, float to
<run>/export/<step>/ and `--quantize int8` to <run>/export-int8/<step>/. For the record, a third
export quantizes activations too (Keras' default `Int8QuantizationConfig()`, int8 x int8 matmuls),
the alternative that tfpref.models.quantization decided against.

Each SavedModel is loaded with `tf.saved_model.load` in this process, and measured through its
serving signatures:
    size: bytes of its variables/ directory (target: int8 <= 40% of float);
    perplexity: exp(-sum of `score`'s log-probs / tokens) over held-out text, the run's validation
        split cut into windows of --window bytes (target: int8 within 1% of float), and the largest
        absolute difference of a token's log-prob from the float export's;
    speed: `score` of a batch of 16 windows, and `generate` of 8 prompts of 32 bytes with 64 new
        tokens (temperature 1, top-k 0, top-p 1, a fixed seed), timed in interleaved rounds after a
        warm-up call; generate is reported per decoding step (the call over the longest completion).

Output: one JSON object per export on stdout, then a summary with the int8/float ratios; progress on
stderr.

Usage:
    python benchmarks/export_quantized.py                       # trains logs/export_quantized/run
    python benchmarks/export_quantized.py --run_dir logs/mle    # an existing run instead
    python benchmarks/export_quantized.py --quick               # a tiny model, 60 steps (smoke test)
"""
import tfpref  # noqa: F401  (first: silences TensorFlow's CUDA-probe noise on import)

import argparse
import contextlib
import math
import os
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import bench_common  # benchmarks/ is on sys.path when a script there runs
from bench_common import BackgroundLoad, emit, train_once

from tfpref.config import RunConfig
from tfpref.data.corpus import load_splits
from tfpref.models.quantization import quantized_copy
from tfpref.runs import checkpoint_step, load_config, load_run
from tfpref.training.export import export_model, export_run

BENCHMARK = "export_quantized"
SCORE_BATCH, GENERATE_BATCH, PROMPT_BYTES, NEW_TOKENS = 16, 8, 32, 64
TARGET_SIZE_RATIO, TARGET_PERPLEXITY_CHANGE = 0.40, 0.01


def log(message):
    bench_common.log(BENCHMARK, message)


def trained_run(args):
    """The run directory to export: --run_dir, or a default-transformer MLE run trained once."""
    if args.run_dir:
        return args.run_dir
    config = RunConfig(model_dir=os.path.join(args.workdir, "run-quick" if args.quick else "run"))
    config.train.objective, config.train.train_steps = "mle", args.train_steps
    config.runtime.export, config.runtime.eval_every = False, 10 ** 9
    if args.quick:
        config.model.d_model, config.model.num_layers, config.model.ff_dim = 64, 2, 256
        config.data.seq_len = 128
    log(f"training {config.train.train_steps} MLE steps in {config.model_dir} (reused if finished)")
    train_once(config)
    return config.model_dir


def held_out_windows(model_dir, window, count):
    """Up to `count` byte strings of `window` bytes cut from the run's validation split, in order."""
    config = load_config(model_dir)
    data = config.data
    chunks = load_splits(data.data, data.text_field, data.max_chunk_chars, data.validation_data)["validation"]
    windows = []
    for chunk in chunks:
        encoded = chunk.encode("utf-8")
        windows += [encoded[i:i + window] for i in range(0, len(encoded) - window + 1, window)]
        if len(windows) >= count:
            break
    if not windows:
        raise SystemExit(f"{model_dir}: no validation text of {window} bytes to score")
    return windows[:count]


def exports(model_dir, workdir):
    """{name: SavedModel path}: the run's float and int8 exports, and the dynamic-activation one."""
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON lines
        paths = {"float": export_run(model_dir), "int8": export_run(model_dir, quantize="int8")}
        config, model, checkpoint = load_run(model_dir)
        dynamic = quantized_copy(model, config=keras.quantizers.Int8QuantizationConfig())
        print(f"int8 with dynamic activations: {dynamic.report}")
        paths["int8_dynamic_activations"] = export_model(
            dynamic.model, os.path.join(workdir, "dynamic_activations"), checkpoint_step(checkpoint),
            config.data.seq_len)
    return paths


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


class Served:
    """One loaded export and its calls."""

    def __init__(self, name, path, score_texts, prompts):
        self.name, self.path = name, path
        self.signatures = tf.saved_model.load(path).signatures
        self.score_texts = tf.constant(score_texts)
        self.generate_inputs = dict(prompts=tf.constant(prompts), max_new_tokens=tf.constant(NEW_TOKENS),
                                    temperature=tf.constant(1.0), top_k=tf.constant(0), top_p=tf.constant(1.0),
                                    seed=tf.constant(1))
        self.times = {"score": [], "generate": []}
        self.steps = []

    def score(self, texts):
        out = self.signatures["score"](texts=tf.constant(texts))
        return out["token_logprobs"].numpy(), out["num_tokens"].numpy()

    def timed(self, signature):
        began = time.perf_counter()
        if signature == "score":
            self.signatures["score"](texts=self.score_texts)["total_logprob"].numpy()
        else:
            self.steps.append(int(self.signatures["generate"](**self.generate_inputs)["num_tokens"].numpy().max()))
        self.times[signature].append(time.perf_counter() - began)


def held_out_logprobs(served, windows, batch):
    """[windows, tokens] log-probs of each window's tokens under `served`'s score signature."""
    rows = [served.score(windows[i:i + batch])[0] for i in range(0, len(windows), batch)]
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default=None, help="a finished language-model run to export (default: train one)")
    parser.add_argument("--workdir", default="logs/export_quantized", help="the trained run and the third export")
    parser.add_argument("--train_steps", type=int, default=None, help="MLE steps (default 400, --quick 60)")
    parser.add_argument("--window", type=int, default=256, help="bytes per held-out window scored")
    parser.add_argument("--windows", type=int, default=None, help="held-out windows (default 512, --quick 32)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per signature (default 10, --quick 2)")
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps and calls (smoke test)")
    args = parser.parse_args(argv)
    args.train_steps = args.train_steps or (60 if args.quick else 400)
    count = args.windows or (32 if args.quick else 512)
    calls = args.calls or (2 if args.quick else 10)

    background = BackgroundLoad()
    model_dir = trained_run(args)
    windows = held_out_windows(model_dir, args.window, count)
    log(f"exporting {model_dir}")
    paths = exports(model_dir, args.workdir)
    prompts = [w[:PROMPT_BYTES] for w in windows[:GENERATE_BATCH]]
    served = [Served(name, path, windows[:SCORE_BATCH], prompts) for name, path in paths.items()]

    logprobs, tokens = {}, sum(len(w) for w in windows)
    for export in served:
        log(f"{export.name}: scoring {len(windows)} held-out windows of {args.window} bytes; warm-up")
        logprobs[export.name] = held_out_logprobs(export, windows, SCORE_BATCH)
        export.timed("generate")  # warm-up: the first call of a loaded function is slower
        export.times["generate"], export.steps = [], []
    rounds = 2
    for r in range(rounds):
        for export in served:
            count_now = calls // rounds + (1 if r < calls % rounds else 0)
            log(f"round {r + 1}/{rounds}: {export.name}, {count_now} calls of score and generate")
            for _ in range(count_now):
                export.timed("score")
                export.timed("generate")

    records = {}
    for export in served:
        score_s = statistics.median(export.times["score"])
        generate_s = statistics.median(export.times["generate"])
        difference = np.abs(logprobs[export.name] - logprobs["float"]).max()
        records[export.name] = {
            "benchmark": BENCHMARK, "export": export.name, "path": export.path,
            "variables_bytes": directory_bytes(os.path.join(export.path, "variables")),
            "held_out_perplexity": round(math.exp(-logprobs[export.name].sum() / tokens), 4),
            "max_abs_logprob_difference": round(float(difference), 5),
            "score_ms": round(1e3 * score_s, 2), "score_tokens_per_second": round(
                SCORE_BATCH * args.window / score_s),
            "generate_ms": round(1e3 * generate_s, 1),
            "generate_ms_per_step": round(1e3 * generate_s / statistics.median(export.steps), 2),
            "timed_calls": len(export.times["score"]), "held_out_windows": len(windows), "window_bytes": args.window}
        emit(records[export.name])

    summary = {"benchmark": BENCHMARK, "summary": True, "run_dir": model_dir, "quick": args.quick}
    for name in ("int8", "int8_dynamic_activations"):
        ours, base = records[name], records["float"]
        prefix = "" if name == "int8" else "dynamic_"
        summary.update({
            f"{prefix}size_ratio": round(ours["variables_bytes"] / base["variables_bytes"], 3),
            f"{prefix}perplexity_change": round(ours["held_out_perplexity"] / base["held_out_perplexity"] - 1, 5),
            f"{prefix}max_abs_logprob_difference": ours["max_abs_logprob_difference"],
            f"{prefix}score_time_ratio": round(ours["score_ms"] / base["score_ms"], 3),
            f"{prefix}generate_step_time_ratio": round(ours["generate_ms_per_step"] / base["generate_ms_per_step"],
                                                       3)})
    summary.update(target_size_ratio=TARGET_SIZE_RATIO, target_perplexity_change=TARGET_PERPLEXITY_CHANGE,
                   meets_size_target=bool(summary["size_ratio"] <= TARGET_SIZE_RATIO),
                   meets_perplexity_target=bool(abs(summary["perplexity_change"]) <= TARGET_PERPLEXITY_CHANGE),
                   background_cpu_cores=background.cores(), cpu_count=os.cpu_count())
    emit(summary)


if __name__ == "__main__":
    main()
