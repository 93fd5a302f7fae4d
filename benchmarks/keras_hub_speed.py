"""tfpref on a keras-hub preset against keras-hub itself: generation and training, in one run.

The preset: a GPT-2 written by `tfpref preset` (tfpref.models.keras_hub_init; byte-level BPE
vocabulary of 258, 4 layers, width 128, 4 heads, ff 512, 256 positions, random weights). Both sides
load the same preset directory, so they run the same weights.

1. Generation, as new tokens per second: tfpref's `Sampler` on `--model keras_hub` (the preset's
   layers with keras-hub's own KV cache, compiled with and without XLA) against keras-hub's
   `CausalLM.generate` (its own cache, XLA by default). Batch 8, prompts of 32 tokens, 96 new
   tokens, greedy and top-k (k=5); generation never stops early on either side, so every call
   makes 8 x 96 tokens. A call is timed from NumPy inputs to NumPy outputs (median of the calls).
2. Training, as tokens per second: tfpref's real training step (`Trainer.train_step`, `--model
   keras_hub --objective mle`, batches from its input pipeline) against keras-hub's `fit` on the
   CausalLM of the same preset, same batch (16 x 128 tokens), AdamW with the same settings, with
   and without XLA; full fine-tuning, and LoRA rank 4 on both sides (`--lora_rank 4`; keras-hub:
   `backbone.enable_lora(4)`).

Configurations are timed in interleaved rounds after warm-up (tracing, compilation). The summary
gives tfpref / keras-hub for each (best jit setting of each side); the target is >= 1.

Usage:
    python benchmarks/keras_hub_speed.py            # 10 timed calls / steps per configuration
    python benchmarks/keras_hub_speed.py --quick    # 2 (smoke test)
"""
import tfpref  # noqa: F401  (first: silences TensorFlow's CUDA-probe noise on import)

import argparse
import os
import shutil
import statistics
import tempfile
import time

import keras
import keras_hub
import numpy as np

import bench_common  # benchmarks/ is on sys.path when a script there runs
from bench_common import BackgroundLoad, emit
from train_throughput import LEARNING_RATE, WEIGHT_DECAY, CLIP_NORM, _StepTimes, write_corpus

from tfpref.config import ModelConfig, RunConfig
from tfpref.data.pipeline import batch_order, distributed_dataset
from tfpref.models import CausalLM, build_model
from tfpref.models.keras_hub_init import causal_lm_class, random_preset
from tfpref.models.sampling import Sampler
from tfpref.training.run import build_trainer

BENCHMARK = "keras_hub_speed"
SIZES = {"num_layers": 4, "hidden_dim": 128, "num_heads": 4, "intermediate_dim": 512, "max_sequence_length": 256}
BATCH, PROMPT_LEN, NEW_TOKENS, TOP_K = 8, 32, 96, 5
TRAIN_BATCH, SEQ_LEN, LORA_RANK = 16, 128, 4
TARGET = 1.0


def log(message):
    bench_common.log(BENCHMARK, message)


def random_prompts(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, vocab_size, size=(BATCH, PROMPT_LEN), dtype=np.int32)


def keras_hub_causal_lm(preset):
    """keras-hub's own CausalLM of `preset`, fed token ids (no preprocessor), as a user drives it."""
    backbone = keras_hub.models.Backbone.from_preset(preset)
    return causal_lm_class(type(backbone))(backbone=backbone, preprocessor=None)


class TfprefSampling:
    def __init__(self, preset, sampler_name, jit_compile, prompts):
        self.impl, self.sampler_name, self.jit_compile = "tfpref_sampler", sampler_name, jit_compile
        policy = CausalLM(build_model(ModelConfig(model="keras_hub", preset=preset)), name="causal_lm")
        self.sampler = Sampler(policy, NEW_TOKENS, eos_id=None, jit_compile=jit_compile)
        self.prompts, self.mask = prompts, np.ones_like(prompts, bool)
        self.settings = {"temperature": 0.0} if sampler_name == "greedy" else {"top_k": TOP_K}
        self.calls = 0

    def run(self):
        self.calls += 1
        out = self.sampler(self.prompts, self.mask, seed=self.calls, **self.settings)
        assert out["lengths"].min() == NEW_TOKENS
        return out["tokens"]


class KerasHubGenerate:
    def __init__(self, preset, sampler_name, prompts):
        self.impl, self.sampler_name, self.jit_compile = "keras_hub_generate", sampler_name, True
        self.model = keras_hub_causal_lm(preset)
        self.model.compile(sampler=keras_hub.samplers.GreedySampler() if sampler_name == "greedy"
                           else keras_hub.samplers.TopKSampler(k=TOP_K))
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


class TfprefTraining:
    """tfpref's Trainer.train_step on the preset, fed by the library's own input pipeline."""

    def __init__(self, preset, corpus, lora_rank, jit_compile, total_steps, workdir):
        self.impl, self.lora_rank, self.jit_compile = "tfpref_train_step", lora_rank, jit_compile
        config = RunConfig(model_dir=tempfile.mkdtemp(prefix="run_", dir=workdir))
        config.data.data, config.data.seq_len = corpus, SEQ_LEN
        config.model.model, config.model.preset, config.model.lora_rank = "keras_hub", preset, lora_rank
        config.train.objective, config.train.batch_size, config.train.train_steps = "mle", TRAIN_BATCH, total_steps
        config.runtime.jit_compile = jit_compile
        self.trainer = build_trainer(config, show_progress=False)
        order = batch_order(self.trainer.train_data.num_examples, total_steps, TRAIN_BATCH, 0)
        self.batches = iter(distributed_dataset(self.trainer.strategy, self.trainer.train_data, order,
                                                self.trainer.grad_accum))

    def run(self, steps):
        times = []
        for _ in range(steps):
            began = time.perf_counter()
            float(self.trainer.train_step(next(self.batches))["loss"])  # the step has finished
            times.append(time.perf_counter() - began)
        return times

    def close(self):
        self.trainer.logger.close()


class KerasHubFit:
    """keras-hub's fit on the CausalLM of the same preset, random tokens of the same shape."""

    def __init__(self, preset, lora_rank, jit_compile):
        self.impl, self.lora_rank, self.jit_compile = "keras_hub_fit", lora_rank, jit_compile
        self.model = keras_hub_causal_lm(preset)
        if lora_rank:
            self.model.backbone.enable_lora(lora_rank)
        self.vocab_size = self.model.backbone.vocabulary_size
        optimizer = keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, beta_1=0.9,
                                           beta_2=0.95, epsilon=1e-8, global_clipnorm=CLIP_NORM)
        self.model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           weighted_metrics=[], jit_compile=jit_compile)
        self.rng = np.random.default_rng(0)

    def run(self, steps):
        tokens = self.rng.integers(1, self.vocab_size, size=((steps + 1) * TRAIN_BATCH, SEQ_LEN + 1), dtype=np.int32)
        x = {"token_ids": tokens[:, :-1], "padding_mask": np.ones_like(tokens[:, :-1], bool)}
        timer = _StepTimes()
        self.model.fit(x, tokens[:, 1:], batch_size=TRAIN_BATCH, epochs=1, shuffle=False, verbose=0,
                       callbacks=[timer])
        return timer.intervals()

    def close(self):
        pass


def interleaved(runners, rounds, per_round, call):
    """{id(runner): [seconds, ...]} from `rounds` rounds of `per_round` timed units each."""
    times = {id(runner): [] for runner in runners}
    for r in range(rounds):
        for runner in runners:
            log(f"round {r + 1}/{rounds}: {runner.impl} {getattr(runner, 'sampler_name', '')}"
                f"{getattr(runner, 'lora_rank', '')} jit_compile={runner.jit_compile}")
            times[id(runner)] += call(runner, per_round)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None, help="timed calls / steps per configuration (10; --quick 2)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="a few calls (smoke test)")
    args = parser.parse_args(argv)
    calls = max(1, args.calls if args.calls is not None else (2 if args.quick else 10))
    rounds = max(1, min(args.rounds, calls))
    per_round = -(-calls // rounds)

    background = BackgroundLoad()
    workdir = tempfile.mkdtemp(prefix="tfpref_keras_hub_speed_")
    records, runners = [], []
    try:
        preset = os.path.join(workdir, "preset")
        summary = random_preset(preset, overrides=SIZES, seed=0)
        log(f"preset: {summary['class_name']}, {summary['parameters']} parameters")
        prompts = random_prompts(summary["vocabulary_size"])

        samplers = [TfprefSampling(preset, name, jit, prompts) for name in ("greedy", "top_k") for jit in (True, False)]
        samplers += [KerasHubGenerate(preset, name, prompts) for name in ("greedy", "top_k")]
        for runner in samplers:
            runner.run()  # warm-up: tracing and compilation
        times = interleaved(samplers, rounds, per_round,
                            lambda runner, n: [_timed(runner.run) for _ in range(n)])
        for runner in samplers:
            median = statistics.median(times[id(runner)])
            records.append({"benchmark": BENCHMARK, "stage": "generate", "impl": runner.impl,
                            "sampler": runner.sampler_name, "jit_compile": runner.jit_compile,
                            "new_tokens_per_second": round(BATCH * NEW_TOKENS / median, 1),
                            "call_ms": round(1e3 * median, 1), "timed_calls": len(times[id(runner)]),
                            "batch": BATCH, "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS})

        corpus = write_corpus(workdir)
        trainers = []
        for lora_rank in (0, LORA_RANK):
            for jit in (True, False):
                trainers.append(TfprefTraining(preset, corpus, lora_rank, jit, 2 + rounds * per_round, workdir))
                trainers.append(KerasHubFit(preset, lora_rank, jit))
        runners = trainers
        for runner in trainers:
            runner.run(2)  # warm-up
        times = interleaved(trainers, rounds, per_round, lambda runner, n: runner.run(n))
        for runner in trainers:
            median = statistics.median(times[id(runner)])
            records.append({"benchmark": BENCHMARK, "stage": "train", "impl": runner.impl,
                            "lora_rank": runner.lora_rank, "jit_compile": runner.jit_compile,
                            "tokens_per_second": round(TRAIN_BATCH * SEQ_LEN / median, 1),
                            "step_ms": round(1e3 * median, 1), "timed_steps": len(times[id(runner)]),
                            "batch": TRAIN_BATCH, "seq_len": SEQ_LEN})
    finally:
        for runner in runners:
            runner.close()
        shutil.rmtree(workdir, ignore_errors=True)
    for record in records:
        emit(record)

    def best(stage, impl, key, value, rate):
        return max((r for r in records if r["stage"] == stage and r["impl"] == impl and r[key] == value),
                   key=lambda r: r[rate])[rate]

    ratios = {}
    for name in ("greedy", "top_k"):
        ratios[f"generate_{name}_vs_keras_hub"] = round(
            best("generate", "tfpref_sampler", "sampler", name, "new_tokens_per_second")
            / best("generate", "keras_hub_generate", "sampler", name, "new_tokens_per_second"), 2)
    for rank in (0, LORA_RANK):
        label = f"train_lora{rank}" if rank else "train_full"
        ratios[f"{label}_vs_keras_hub_fit"] = round(
            best("train", "tfpref_train_step", "lora_rank", rank, "tokens_per_second")
            / best("train", "keras_hub_fit", "lora_rank", rank, "tokens_per_second"), 2)
    emit({"benchmark": BENCHMARK, "summary": True, **ratios, "target": TARGET,
          "meets_target": bool(min(ratios.values()) >= TARGET), "quick": args.quick,
          "background_cpu_cores": background.cores(), "cpu_count": os.cpu_count()})


def _timed(function):
    began = time.perf_counter()
    function()
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
