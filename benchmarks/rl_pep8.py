"""Learning PEP 8 from preferences: pretrained policy -> preference data -> reward model -> RL -> evaluation.

Steps (each run directory under --results_dir is reused when it already holds a finished run):
  1. policy: an MLE transformer pretrained on the standard library;
  2. preferences.jsonl: `tfpref preferences make`'s data: --completions_per_prompt
     completions of prompts cut from held-out stdlib functions, ranked by a simulated annotator
     (Plackett-Luce; Bradley-Terry for pairs) on -(PEP 8 violations per byte) at
     --annotator_temperature; its noise ceiling is the best pairwise accuracy a reward model can get;
  3. reward_model: a reward model (--rm_model: a convolutional encoder from scratch, or a
     transformer initialised from the policy; Plackett-Luce loss on rankings, Bradley-Terry on
     pairs); pairwise accuracy on held-out prompts against the ceiling (target: >= 95% of it);
  4. RL (--algorithms, RLOO and PPO by default) from the policy against the reward model, with the
     adaptive KL controller aiming at --target_kl; evaluated on held-out prompts against the
     policy: reward (target: up by >= 1 reward std of the reference policy, with the KL <= 1.5 x
     target; the std is the reward model's normalisation, over its ~170k training completions, and
     the gain over the std of the 256 evaluation completions is reported beside it), win-rate, KL,
     PEP 8 misalignment of the completions, NLL drift;
  5. speed: RL completions per second (sampling, scoring, updates: the whole loop), and the
     rollout sampler against keras-hub's GPT2CausalLM.generate at the rollout's shape, same run.
Writes results.md (the table), reward_vs_kl.png (reward against KL over training), JSON lines
on stdout.

    python benchmarks/rl_pep8.py              # about 70 minutes on 2 cores
    python benchmarks/rl_pep8.py --quick      # a few minutes: tiny models, small data
"""
import tfpref  # noqa: F401  (first: silences TensorFlow's CUDA-probe noise on import)

import argparse
import os
import time

import numpy as np

from bench_common import BackgroundLoad, emit, log, train_once

BENCHMARK = "rl_pep8"
COLUMNS = [("stage", "stage", None), ("reward", "reward (RM, normalised)", "+.3f"),
           ("reward_gain", "gain (reference stds)", "+.2f"),
           ("reward_gain_in_std", "gain (stds of the eval sample)", "+.2f"),
           ("win_rate", "win-rate vs policy", ".1%"),
           ("kl_to_reference", "KL (nats/completion)", ".2f"), ("misalignment", "PEP 8 violations/byte ↓", ".4f"),
           ("nll_drift", "held-out NLL drift (nats/byte)", "+.4f"), ("rm_accuracy", "RM accuracy", ".1%"),
           ("rm_ceiling", "noise ceiling", ".1%"), ("samples_per_second", "RL completions/s", ".1f"),
           ("seconds", "train s", ".0f")]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--results_dir", default="logs/rl_pep8", help="Run directories, results.md and the plot.")
    parser.add_argument("--quick", action="store_true", help="Tiny models and data (a smoke test of the pipeline).")
    parser.add_argument("--algorithms", default="rloo,ppo", help="Comma-separated RL objectives to run.")
    parser.add_argument("--pretrain_steps", type=int, default=None, help="Policy pretraining steps (default 1000).")
    parser.add_argument("--num_completions", type=int, default=None,
                        help="Completions sampled for the preference data (default 192000).")
    parser.add_argument("--completions_per_prompt", type=int, default=4,
                        help="Completions the annotator ranks together (2: pairs). More gives more "
                             "comparisons per sample and per reward model forward pass.")
    parser.add_argument("--annotator_temperature", type=float, default=0.01,
                        help="Simulated annotator's Bradley-Terry temperature, in violations per byte.")
    parser.add_argument("--rm_model", default="conv", choices=["conv", "transformer"],
                        help="Reward model: conv, a 6-layer convolutional encoder (width 48) from scratch, "
                             "or transformer, initialised from the policy (more compute per comparison, and "
                             "it overfits sooner).")
    parser.add_argument("--rm_steps", type=int, default=None,
                        help="Reward model steps of 128 completions (default: about 5 epochs of the "
                             "training rankings for conv, 300 for transformer).")
    parser.add_argument("--reward_pooling", default="mean",
                        help="Reward model pooling: mean suits the hidden reward, a density of violations.")
    parser.add_argument("--code_structure", action=argparse.BooleanOptionalAction, default=True,
                        help="Reward model: learned embeddings of each byte's line structure (indent, its "
                             "change, bracket depth) on the backbone's input.")
    parser.add_argument("--rl_steps", type=int, default=None,
                        help="RL optimizer steps of 32 sampled completions (default 200). PPO, which reuses "
                             "each rollout for ppo_epochs passes, takes ppo_epochs times as many, so that "
                             "every algorithm samples the same number of completions.")
    parser.add_argument("--rl_learning_rate", type=float, default=1e-4, help="RL peak learning rate.")
    parser.add_argument("--target_kl", type=float, default=4.0, help="KL target of the adaptive controller (nats).")
    parser.add_argument("--eval_prompts", type=int, default=None, help="Held-out prompts in evaluation (default 256).")
    return parser.parse_args()


def base_config(args, name, objective, steps):
    from tfpref.config import RunConfig

    config = RunConfig(model_dir=os.path.join(args.results_dir, name))
    config.train.objective, config.train.train_steps = objective, steps
    config.runtime.export, config.runtime.eval_every, config.runtime.check_samples = False, 10 ** 9, 0
    if args.quick:
        config.model.d_model, config.model.num_layers, config.model.ff_dim = 64, 2, 256
        config.data.seq_len = 128
    return config


def make_preferences_once(args, policy_dir, path):
    from tfpref.data.preferences import load_preferences
    from tfpref.preferences import make_preferences, write_jsonl

    if not os.path.exists(path):
        k = args.completions_per_prompt
        log(BENCHMARK, f"sampling {args.num_completions} completions, ranked {k} at a time")
        # 256 completions per sampler call (make's default is 64): fewer, fuller calls. The default
        # 192000 completions take about 35 minutes on 2 cores, pairs or rankings of 4 alike (both
        # keep ~94% of their groups: the rest hold an empty or duplicate completion).
        records = make_preferences(policy_dir, args.num_completions // k, "pep8", args.annotator_temperature,
                                   max_new_tokens=args.max_new_tokens, batch_size=256 // k * k,
                                   completions_per_prompt=k)
        write_jsonl(path, records)
    return load_preferences(path)


def rl_config(args, algorithm, policy_dir, reward_dir):
    config = base_config(args, algorithm, algorithm, args.rl_steps)
    if algorithm == "ppo":  # the same samples as RLOO: each rollout is learnt from ppo_epochs times
        config.train.train_steps *= config.align.ppo_epochs
    config.data.seq_len = 256
    config.train.init_from = policy_dir
    config.train.learning_rate, config.train.warmup_steps, config.train.weight_decay = args.rl_learning_rate, 10, 0.0
    config.train.batch_size = 32
    align = config.align
    # kl_coef starts where a first run's controller ended up, and may move up to 1.3% a step (32
    # completions over a horizon of 500, times the 0.2 error clip): with 0.1 and 1000 the KL of
    # RLOO's rollouts overshot 1.5 x target for a third of the run before the controller caught up.
    align.reward_model, align.target_kl, align.kl_coef = reward_dir, args.target_kl, 0.2
    align.kl_horizon = 500
    align.samples_per_prompt, align.max_new_tokens = 4, args.max_new_tokens
    align.missing_eos_penalty = 0.0
    config.runtime.log_every, config.runtime.checkpoint_every = 5, 10 ** 9
    return config


def sampling_speed(policy_dir, rollout, prompt_len, new_tokens, calls=3):
    """Completions per second of the rollout sampler and of keras-hub's generate, same shape."""
    import keras
    import keras_hub

    from tfpref.data.tokenizer import BOS_ID, NUM_SPECIAL, VOCAB_SIZE
    from tfpref.models.sampling import Sampler
    from tfpref.runs import load_run

    _, policy, _ = load_run(policy_dir)
    model = policy.backbone
    rng = np.random.default_rng(0)
    prompts = rng.integers(NUM_SPECIAL, VOCAB_SIZE, size=(rollout, prompt_len), dtype=np.int32)
    prompts[:, 0] = BOS_ID
    sampler = Sampler(model, new_tokens, eos_id=None)
    mask = np.ones_like(prompts, bool)

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB_SIZE, num_layers=model.num_layers, num_heads=model.num_heads,
        hidden_dim=model.d_model, intermediate_dim=model.ff_dim, max_sequence_length=prompt_len + new_tokens,
        dropout=0.0)
    reference = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    reference.compile(sampler=keras_hub.samplers.RandomSampler())
    token_ids = np.zeros((rollout, prompt_len + new_tokens), np.int32)
    token_ids[:, :prompt_len] = prompts
    padding = np.zeros_like(token_ids, bool)
    padding[:, :prompt_len] = True
    runs = {"tfpref": lambda i: sampler(prompts, mask, temperature=1.0, seed=i),
            "keras_hub": lambda i: reference.generate({"token_ids": token_ids, "padding_mask": padding},
                                                      stop_token_ids=None)}
    speed = {}
    for name, run in runs.items():
        run(0)  # warm-up: tracing and compilation
        began = time.perf_counter()
        for i in range(calls):
            run(i + 1)
        speed[name] = rollout * calls / (time.perf_counter() - began)
    return speed


def reward_kl_curves(run_dirs, path, target_kl):
    """PNG of reward against KL over training (TensorBoard's train scalars), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for label, directory in run_dirs.items():
        values = {}
        for event_file in tf.io.gfile.glob(os.path.join(directory, "train", "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(event_file):
                for value in event.summary.value:
                    if value.tag in ("reward", "kl") and value.metadata.plugin_data.plugin_name == "scalars":
                        values.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
        steps = sorted(set(values.get("reward", {})) & set(values.get("kl", {})))
        axes.plot([values["kl"][s] for s in steps], [values["reward"][s] for s in steps], marker=".", label=label)
    axes.axvline(target_kl, color="grey", linestyle=":", label="target KL")
    axes.axvline(1.5 * target_kl, color="grey", linestyle="--", label="1.5 x target")
    axes.set_xlabel("KL to the reference policy (nats per completion)")
    axes.set_ylabel("reward (reward model, normalised)")
    axes.set_title("RL against a PEP 8 reward model: reward vs KL over training", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main():
    args = parse_args()
    quick = (150, 800, 50, 30, 64, 32) if args.quick else (1000, 192000, None, 200, 256, 64)
    for name, value in zip(("pretrain_steps", "num_completions", "rm_steps", "rl_steps", "eval_prompts",
                            "max_new_tokens"), quick):
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    from tfpref.evaluation.policy import PolicyEvalSettings
    from tfpref.evaluation.report import markdown_table
    from tfpref.evaluation.run import evaluate_run

    os.makedirs(args.results_dir, exist_ok=True)
    load = BackgroundLoad()

    policy = base_config(args, "policy", "mle", args.pretrain_steps)
    log(BENCHMARK, f"policy: {args.pretrain_steps} MLE steps in {policy.model_dir}")
    _, policy_seconds = train_once(policy)

    preferences_path = os.path.join(args.results_dir, "preferences.jsonl")
    preferences = make_preferences_once(args, policy.model_dir, preferences_path)
    ceiling = preferences.split("validation").noise_ceiling()

    # 128 completions a step whatever the group size: 32 rankings of 4, 64 pairs.
    rm_batch = max(1, 128 // args.completions_per_prompt)
    if args.rm_steps is None:
        training_items = len(preferences.split("train").items)
        args.rm_steps = 300 if args.rm_model == "transformer" else max(1, round(5 * training_items / rm_batch))
    rm = base_config(args, "reward_model", "reward_model", args.rm_steps)
    rm.data.data, rm.data.seq_len, rm.train.batch_size = preferences_path, 160, rm_batch
    if args.rm_model == "transformer":
        rm.train.init_from, rm.train.learning_rate, rm.train.warmup_steps = policy.model_dir, 3e-4, 50
    else:  # from scratch: small, and a higher learning rate
        rm.model.model, rm.model.d_model, rm.model.num_layers, rm.model.dropout = "conv", 48, 6, 0.1
        rm.train.learning_rate, rm.train.warmup_steps = 2e-3, 50
    rm.align.reward_pooling, rm.align.code_structure = args.reward_pooling, args.code_structure
    comparisons = len(preferences.comparisons())
    log(BENCHMARK, f"reward model: {args.rm_steps} steps on {len(preferences.items)} {preferences.kind} "
                   f"records ({comparisons} comparisons)")
    _, rm_seconds = train_once(rm)
    rm_metrics = evaluate_run(rm.model_dir, batch_size=64)["metrics"]
    rm_row = {"benchmark": BENCHMARK, "stage": "reward model", "rm_model": args.rm_model,
              "rm_accuracy": rm_metrics["accuracy"],
              "rm_ceiling": rm_metrics.get("accuracy_ceiling", ceiling), "seconds": rm_seconds,
              "records": len(preferences.items), "completions_per_prompt": args.completions_per_prompt,
              "comparisons": comparisons}
    rm_row["rm_vs_ceiling"] = rm_row["rm_accuracy"] / rm_row["rm_ceiling"]
    # The same accuracy in expectation over the annotator's labels (less noisy; see docs/reward-model-study.md).
    rm_row["rm_expected_vs_ceiling"] = rm_metrics["expected_accuracy"] / rm_row["rm_ceiling"]
    emit(rm_row)

    rows, run_dirs = [], {}
    settings = PolicyEvalSettings(num_prompts=args.eval_prompts, scorer="pep8", batch_size=64)
    for algorithm in [a for a in args.algorithms.split(",") if a]:
        config = rl_config(args, algorithm, policy.model_dir, rm.model_dir)
        log(BENCHMARK, f"{algorithm}: {config.train.train_steps} steps against the reward model, target KL "
                       f"{args.target_kl}")
        _, seconds = train_once(config)
        completions = rollouts_completions(config)
        metrics = evaluate_run(config.model_dir, policy=settings)["metrics"]
        row = {"benchmark": BENCHMARK, "stage": algorithm, "seconds": seconds,
               "samples_per_second": completions / seconds, "target_kl": args.target_kl,
               **{k: metrics[k] for k in ("reward", "reference_reward", "reward_gain", "reward_gain_in_std",
                                          "win_rate", "kl_to_reference", "nll_drift", "empty_rate",
                                          "reference_empty_rate") if k in metrics},
               "misalignment": -metrics["score_reward"], "reference_misalignment": -metrics["reference_score_reward"]}
        row["meets_target"] = bool(row["reward_gain"] >= 1.0 and row["kl_to_reference"] <= 1.5 * args.target_kl)
        rows.append(row)
        run_dirs[algorithm] = config.model_dir
        emit(row)
    if rows:
        before = {"stage": "policy (before RL)", "reward": rows[0]["reference_reward"], "reward_gain": 0.0,
                  "reward_gain_in_std": 0.0, "kl_to_reference": 0.0,
                  "misalignment": rows[0]["reference_misalignment"], "nll_drift": 0.0, "seconds": policy_seconds}
        rows.insert(0, before)
        reward_kl_curves(run_dirs, os.path.join(args.results_dir, "reward_vs_kl.png"), args.target_kl)

    from tfpref.config import AlignConfig

    prompt_len = 1 + AlignConfig().prompt_chars  # BOS and the longest prompt
    speed = sampling_speed(policy.model_dir, 128, prompt_len, args.max_new_tokens)
    summary = {"benchmark": BENCHMARK, "summary": True, "quick": args.quick,
               "rm_vs_ceiling": round(rm_row["rm_vs_ceiling"], 3),
               "rm_expected_vs_ceiling": round(rm_row["rm_expected_vs_ceiling"], 3), "rm_target": 0.95,
               "rm_meets_target": bool(rm_row["rm_vs_ceiling"] >= 0.95),
               "rl_meets_target": {r["stage"]: r["meets_target"] for r in rows if "meets_target" in r},
               "rollout_sampling_completions_per_second": round(speed["tfpref"], 1),
               "keras_hub_generate_completions_per_second": round(speed["keras_hub"], 1),
               "sampling_vs_keras_hub": round(speed["tfpref"] / speed["keras_hub"], 2),
               "background_cpu_cores": load.cores()}
    emit(summary)
    table = markdown_table([rm_row] + rows, COLUMNS)
    with open(os.path.join(args.results_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(f"# PEP 8 from preferences{' (quick)' if args.quick else ''}\n\n{table}\n\n"
                f"Reward model: {rm_row['rm_accuracy']:.1%} pairwise accuracy on held-out prompts, "
                f"{rm_row['rm_vs_ceiling']:.1%} of the annotator's noise ceiling ({rm_row['rm_ceiling']:.1%}); "
                f"in expectation over the annotator's labels {rm_row['rm_expected_vs_ceiling']:.1%}.\n")
    log(BENCHMARK, f"wrote {args.results_dir}/results.md and reward_vs_kl.png")
    print(table, file=__import__("sys").stderr)


def rollouts_completions(config):
    """Completions an RL run sampled: rollouts made times completions per rollout."""
    from tfpref.objectives import OBJECTIVES

    objective = OBJECTIVES[config.train.objective]
    rollouts = -(-config.train.train_steps // objective.updates_per_rollout(config))
    return rollouts * objective.rollout_size(config)


if __name__ == "__main__":
    main()
