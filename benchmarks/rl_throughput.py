"""Online RL throughput: completions per second of tfpref's RLOO and PPO against TRL's RLOOTrainer.

Shape (both libraries): 8 prompts per rollout x K=4 completions = 32 completions, up to 64 new
tokens sampled at temperature 1, prompts from the standard library (a function's first lines, up
to 64 characters, after BOS), reward = minus the pep8 score of prompt + completion (`--scorer
pep8`, pycodestyle), a KL penalty of 0.05 to the frozen reference (k1, summed over the completion,
in the reward), AdamW at 1e-4. Models: tfpref's default transformer (d_model 128, 4 layers, 4
heads, ff 512, byte vocabulary of 272) and a GPT-2 of the same shape and vocabulary, both as good
as random: tfpref's policy is one MLE step from random initialisation, TRL's GPT-2 is randomly
initialised. Nothing is downloaded.

tfpref: what `train.py --objective rloo` (or ppo) runs: `build_trainer` and `Trainer.fit`, XLA on.
  * rloo: each step makes a rollout of 32 completions and takes one optimizer step on it;
  * ppo: --batch_size 16 x --ppo_minibatches 2 = rollouts of 32, --ppo_epochs 2: four optimizer
    steps per rollout (and a value head).
  Timing: per-rollout timers. A rollout's own timers (`Rollout.seconds`) give sampling, logprobs
  (the one compiled call of the policy and reference passes and the KL) and scoring (decoding
  and the reward); `update` is the optimizer steps, each timed until its results are back in
  Python; `other` is the rest of the wall time (advantages, batches, logging). completions/s =
  completions of the timed rollouts / wall time from the end of the warm-up rollouts' last
  optimizer step to the end of the last one (tracing and XLA compilation fall in the warm-up).

TRL: RLOOTrainer (`benchmarks/trl_rloo_peer.py`) in a child process run by --peer_python (an
  interpreter with torch, trl, transformers and datasets: `pip install -e '.[peers]'`), eager
  PyTorch on the CPU with as many threads as TensorFlow uses, on the same prompts; its step time
  is the interval between optimizer steps after the warm-up steps.

completions_per_second_median comes from the median rollout instead (robust to stalls on a shared
machine). The summary gives tfpref RLOO / TRL RLOO completions per second (target >= 2), from both.
`background_cpu_cores` is the CPU other processes used while each part ran (0: clean numbers).

Output: one JSON object per line on stdout; progress on stderr.

Usage:
    python benchmarks/rl_throughput.py --peer_python /path/to/peers/bin/python   # 30 timed rollouts each
    python benchmarks/rl_throughput.py --quick      # 3 timed rollouts each (smoke test)
    python benchmarks/rl_throughput.py --no_peer    # tfpref only
"""
import tfpref  # noqa: F401  (first: silences TensorFlow's CUDA-probe noise on import)

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import bench_common  # benchmarks/ is on sys.path when a script there runs
from bench_common import BackgroundLoad, emit

BENCHMARK = "rl_throughput"
HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES_PER_PROMPT, PROMPTS_PER_ROLLOUT, MAX_NEW_TOKENS = 4, 8, 64
COMPLETIONS_PER_ROLLOUT = SAMPLES_PER_PROMPT * PROMPTS_PER_ROLLOUT
KL_COEF, LEARNING_RATE, SEED = 0.05, 1e-4, 0
TARGET_VS_TRL = 2.0


def log(message):
    bench_common.log(BENCHMARK, message)


def make_policy(directory):
    """A run directory holding a policy one MLE step from random initialisation (RL starts from a run)."""
    from tfpref.config import RunConfig
    from tfpref.training.run import train

    config = RunConfig(model_dir=directory)
    config.train.objective, config.train.train_steps, config.train.seed = "mle", 1, SEED
    config.data.seq_len = 64
    config.runtime.jit_compile, config.runtime.export, config.runtime.check_samples = False, False, 0
    config.runtime.eval_every, config.runtime.eval_batches = 10 ** 9, 1
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON lines
        train(config, show_progress=False)
    return directory


def rl_config(algorithm, model_dir, policy_dir, rollouts):
    from tfpref.config import RunConfig
    from tfpref.objectives import OBJECTIVES

    config = RunConfig(model_dir=model_dir)
    train, align, runtime = config.train, config.align, config.runtime
    train.objective, train.init_from, train.seed = algorithm, policy_dir, SEED
    train.learning_rate = LEARNING_RATE
    train.batch_size = COMPLETIONS_PER_ROLLOUT // (align.ppo_minibatches if algorithm == "ppo" else 1)
    align.samples_per_prompt, align.max_new_tokens, align.kl_coef = SAMPLES_PER_PROMPT, MAX_NEW_TOKENS, KL_COEF
    train.train_steps = rollouts * OBJECTIVES[algorithm].updates_per_rollout(config)
    runtime.jit_compile, runtime.export, runtime.check_samples = True, False, 0
    runtime.checkpoint_every, runtime.eval_every = 10 ** 9, 10 ** 9  # one checkpoint, after the last step
    return config


def run_tfpref(algorithm, policy_dir, work_dir, rollouts, warmup):
    """The record of `rollouts` timed rollouts (after `warmup` untimed ones) of the library's loop."""
    import tensorflow as tf

    from tfpref.training.run import build_trainer

    model_dir = os.path.join(work_dir, algorithm)
    shutil.rmtree(model_dir, ignore_errors=True)
    config = rl_config(algorithm, model_dir, policy_dir, warmup + rollouts)
    with contextlib.redirect_stdout(sys.stderr):
        trainer = build_trainer(config, show_progress=False)
    made, updates = [], []  # (rollout seconds, lengths); (end time, seconds) of each optimizer step
    maker, make, train_step = trainer.objective.maker, trainer.objective.maker.make, trainer.train_step

    def timed_make(*args, **kwargs):
        rollout = make(*args, **kwargs)
        made.append((rollout.seconds, rollout.arrays["length"]))
        return rollout

    def timed_step(batch):
        began = time.perf_counter()
        result = tf.nest.map_structure(lambda x: x.numpy(), train_step(batch))  # waits for the step
        ended = time.perf_counter()
        updates.append((ended, ended - began))
        return result

    maker.make, trainer.train_step = timed_make, timed_step
    load = BackgroundLoad()
    log(f"tfpref {algorithm}: {warmup} + {rollouts} rollouts of {COMPLETIONS_PER_ROLLOUT} completions, "
        f"{config.train.train_steps} optimizer steps")
    with contextlib.redirect_stdout(sys.stderr):
        trainer.fit()
    per_rollout = len(updates) // len(made)
    timed_updates = updates[warmup * per_rollout:]
    wall = timed_updates[-1][0] - updates[warmup * per_rollout - 1][0]
    rollout_ends = [end for end, _ in updates[warmup * per_rollout - 1::per_rollout]]
    median = statistics.median([b - a for a, b in zip(rollout_ends, rollout_ends[1:])])
    split = {name: float(np.mean([seconds[name] for seconds, _ in made[warmup:]]))
             for name in made[0][0]}
    split["update"] = sum(seconds for _, seconds in timed_updates) / rollouts
    split["other"] = wall / rollouts - sum(split.values())
    lengths = np.concatenate([length for _, length in made[warmup:]])
    return {"benchmark": BENCHMARK, "impl": "tfpref", "algorithm": algorithm,
            "completions_per_second": round(rollouts * COMPLETIONS_PER_ROLLOUT / wall, 1),
            "completions_per_second_median": round(COMPLETIONS_PER_ROLLOUT / median, 1),
            "rollout_seconds": round(wall / rollouts, 4), "rollout_seconds_median": round(median, 4),
            "seconds_per_rollout": {name: round(value, 4) for name, value in split.items()},
            "timed_rollouts": rollouts, "completions_per_rollout": COMPLETIONS_PER_ROLLOUT,
            "optimizer_steps_per_rollout": per_rollout, "mean_completion_length": round(float(lengths.mean()), 1),
            "max_new_tokens": MAX_NEW_TOKENS, "jit_compile": True, "tf_threads": tf_threads(),
            "background_cpu_cores": load.cores()}


def tf_threads():
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()


def run_trl(peer_python, prompts, work_dir, rollouts, warmup):
    """TRL's record from the child process, or a record saying why it was skipped."""
    skipped = {"benchmark": BENCHMARK, "impl": "trl", "algorithm": "rloo", "peer_python": peer_python}
    probe = subprocess.run([peer_python, "-c", "import torch, trl, transformers, datasets"],
                           capture_output=True, text=True)
    if probe.returncode:
        reason = (probe.stderr.strip().splitlines() or ["failed"])[-1]
        log(f"TRL skipped: {peer_python} cannot import torch, trl, transformers, datasets ({reason})")
        return {**skipped, "skipped": reason}
    prompts_file = os.path.join(work_dir, "prompts.json")
    with open(prompts_file, "w", encoding="utf-8") as f:
        json.dump(prompts, f)
    threads = tf_threads()
    # No model hub here: everything the child needs is built locally; offline makes sure of it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    command = [peer_python, os.path.join(HERE, "trl_rloo_peer.py"), "--prompts", prompts_file,
               "--work_dir", os.path.join(work_dir, "trl"), "--steps", str(rollouts), "--warmup_steps", str(warmup),
               "--samples_per_prompt", str(SAMPLES_PER_PROMPT), "--prompts_per_step", str(PROMPTS_PER_ROLLOUT),
               "--max_new_tokens", str(MAX_NEW_TOKENS), "--kl_coef", str(KL_COEF),
               "--learning_rate", str(LEARNING_RATE), "--threads", str(threads), "--seed", str(SEED)]
    log(f"TRL RLOOTrainer: {warmup} + {rollouts} steps in a child process ({peer_python}, {threads} threads)")
    load = BackgroundLoad()  # the child's CPU time is this process's own (bench_common counts children)
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    if finished.returncode:
        log(f"TRL failed with exit code {finished.returncode}")
        return {**skipped, "skipped": f"exit code {finished.returncode}"}
    record = json.loads(finished.stdout.strip().splitlines()[-1])
    return {"benchmark": BENCHMARK, **record, "peer_python": peer_python, "background_cpu_cores": load.cores()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=None,
                        help="timed rollouts (= TRL steps) per configuration (default 30, --quick 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rollouts first (tracing, compilation)")
    parser.add_argument("--algorithms", default="rloo,ppo", help="tfpref objectives to time")
    parser.add_argument("--peer_python", default=sys.executable,
                        help="interpreter with torch, trl, transformers and datasets for the TRL run")
    parser.add_argument("--no_peer", action="store_true", help="time tfpref only")
    parser.add_argument("--work_dir", default=None, help="run directories (default: a temporary one, removed)")
    parser.add_argument("--quick", action="store_true", help="a few rollouts (smoke test)")
    args = parser.parse_args(argv)
    rollouts = max(1, args.rollouts if args.rollouts is not None else (3 if args.quick else 30))
    warmup = max(1, args.warmup)

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="rl_throughput_")
    os.makedirs(work_dir, exist_ok=True)
    try:
        from tfpref.config import AlignConfig
        from tfpref.data.prompts import policy_prompts

        log("policy: one MLE step from random initialisation")
        policy_dir = make_policy(os.path.join(work_dir, "policy"))
        records = []
        for algorithm in [a for a in args.algorithms.split(",") if a]:
            records.append(run_tfpref(algorithm, policy_dir, work_dir, rollouts, warmup))
            emit(records[-1])
        if not args.no_peer:
            prompts = policy_prompts("stdlib", "train", AlignConfig().prompt_chars)  # RL's training prompts
            records.append(run_trl(args.peer_python, prompts, work_dir, rollouts, warmup))
            emit(records[-1])
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)

    summary = {"benchmark": BENCHMARK, "summary": True, "quick": args.quick, "cpu_count": os.cpu_count()}
    for record in records:
        for key in ("completions_per_second", "completions_per_second_median"):
            if key in record:
                summary[f"{record['impl']}_{record['algorithm']}_{key}"] = record[key]
    if summary.get("trl_rloo_completions_per_second") and summary.get("tfpref_rloo_completions_per_second"):
        # Over the whole timed run, and from the median rollout (robust to stalls when the machine is shared).
        ratio = summary["tfpref_rloo_completions_per_second"] / summary["trl_rloo_completions_per_second"]
        median_ratio = (summary["tfpref_rloo_completions_per_second_median"]
                        / summary["trl_rloo_completions_per_second_median"])
        summary.update(rloo_vs_trl=round(ratio, 2), rloo_vs_trl_median=round(median_ratio, 2),
                       target_vs_trl=TARGET_VS_TRL, meets_trl_target=bool(ratio >= TARGET_VS_TRL))
    emit(summary)


if __name__ == "__main__":
    main()
