"""Pretraining with human feedback on the PEP 8 task: every objective, same data, seed and budget.

Trains (or reuses, when --results_dir already holds the finished run) MLE, filter, conditional (at
line, chunk and document granularity), unlikelihood, RWR, AWR and preference-vector conditioning on
the standard library, evaluates each with `evaluate.py --scorer pep8`'s code (unconditional samples
at temperature 0.7, top-p 0.9; KL from the MLE run) and again at temperature 1 without top-p, prints
one JSON line per run and a summary line, and writes results.md (a table) and pareto.png
(misalignment vs held-out LM loss; pareto_t1.png at temperature 1) to --results_dir.

    python benchmarks/phf_pep8.py                 # about an hour on 2 cores
    python benchmarks/phf_pep8.py --quick         # a few minutes: tiny models, few samples
"""
import argparse
import os

from bench_common import BackgroundLoad, emit, log, train_once

BENCHMARK = "phf_pep8"
# (label, objective, feedback overrides)
RUNS = [("mle", "mle", {}), ("filter", "filter", {"segment": "document"}),
        ("conditional (line)", "conditional", {"segment": "line"}),
        ("conditional (chunk)", "conditional", {"segment": "chunk"}),
        ("conditional (document)", "conditional", {"segment": "document"}),
        ("unlikelihood", "unlikelihood", {"segment": "line"}), ("rwr", "rwr", {"segment": "line"}),
        ("awr", "awr", {"segment": "line"}), ("preference_vector", "preference_vector", {"segment": "line"})]
COLUMNS = [("label", "objective", None), ("pep8_misalignment", "misalignment ↓", ".5f"),
           ("reduction", "× lower than MLE", ".2f"), ("pep8_score_max@25", "score_max@25 ↓", ".4f"),
           ("pep8_violation_rate", "samples with a violation", ".1%"), ("pep8_parse_rate", "parse rate", ".1%"),
           ("nll", "held-out LM loss (nats/byte)", ".4f"), ("loss_change", "vs MLE", "+.1%"),
           ("nll_aligned", "LM loss on aligned text", ".4f"), ("kl_to_reference", "KL from MLE (nats/sample)", ".1f"),
           ("pep8_blank_rate", "blank samples", ".1%"), ("t1_misalignment", "misalignment at T=1 ↓", ".5f"),
           ("t1_reduction", "× lower at T=1", ".2f"), ("train_seconds", "train s", ".0f")]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--results_dir", default="logs/phf_pep8", help="Run directories, results.md and pareto.png.")
    parser.add_argument("--train_steps", type=int, default=None, help="Optimizer steps of every run (default 1000).")
    parser.add_argument("--samples", type=int, default=None,
                        help="Unconditional samples scored per run (default 1024).")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="Bytes per sample (default 256).")
    parser.add_argument("--quick", action="store_true",
                        help="Tiny models; defaults of 150 steps and 128 samples of 128 bytes.")
    parser.add_argument("--only", default="", help="Comma-separated labels to run (default: all).")
    return parser.parse_args()


def run_config(args, label, objective, overrides):
    from tfpref.config import RunConfig

    name = label.replace(" ", "_").replace("(", "").replace(")", "")
    config = RunConfig(model_dir=os.path.join(args.results_dir, name))
    config.train.objective, config.train.train_steps = objective, args.train_steps
    config.runtime.export, config.runtime.eval_every = False, 10 ** 9
    for key, value in overrides.items():
        setattr(config.feedback, key, value)
    if args.quick:
        config.model.d_model, config.model.num_layers, config.model.ff_dim = 64, 2, 256
        config.data.seq_len = 128
    return config


def temperature_one(model_dir, args):
    """Misalignment of samples from the model's own distribution (temperature 1, no top-p): at
    temperature 0.7 small byte-level models often fall into runs of spaces, which hides style."""
    from tfpref.evaluation.misalignment import UnconditionalSampler, misalignment_metrics
    from tfpref.runs import load_run
    from tfpref.scorers import get_scorer

    _, model, _ = load_run(model_dir)
    samples = UnconditionalSampler(model, args.max_new_tokens).sample(
        args.samples, temperature=1.0, top_p=1.0, seed=1)
    return misalignment_metrics(samples, get_scorer("pep8"))[0]


def main():
    args = parse_args()
    defaults = (150, 128, 128) if args.quick else (1000, 1024, 256)
    args.train_steps, args.samples, args.max_new_tokens = (
        given if given is not None else default
        for given, default in zip((args.train_steps, args.samples, args.max_new_tokens), defaults))
    from tfpref.evaluation.misalignment import MisalignmentSettings
    from tfpref.evaluation.report import markdown_table, pareto_plot
    from tfpref.evaluation.run import evaluate_run

    wanted = [r for r in RUNS if not args.only or r[0] in args.only.split(",")]
    os.makedirs(args.results_dir, exist_ok=True)
    load = BackgroundLoad()
    rows, reference_dir = [], None
    for label, objective, overrides in wanted:
        config = run_config(args, label, objective, overrides)
        log(BENCHMARK, f"{label}: training {args.train_steps} steps in {config.model_dir}")
        _, seconds = train_once(config)
        reference_dir = reference_dir or (config.model_dir if objective == "mle" else None)
        log(BENCHMARK, f"{label}: evaluating with {args.samples} samples")
        settings = MisalignmentSettings("pep8", args.samples, args.max_new_tokens, reference_dir=reference_dir)
        metrics = evaluate_run(config.model_dir, misalignment=settings)["metrics"]
        row = {"benchmark": BENCHMARK, "label": label, "objective": objective, **overrides,
               "train_seconds": seconds, "quick": args.quick,
               **{k: v for k, v in metrics.items() if k.startswith(("pep8_", "nll", "kl_"))},
               **{f"t1_{k}": v for k, v in temperature_one(config.model_dir, args).items()}}
        rows.append(row)
        emit(row)
    mle = next((r for r in rows if r["objective"] == "mle"), None)
    for row in rows:
        if mle:
            row["reduction"] = mle["pep8_misalignment"] / max(row["pep8_misalignment"], 1e-12)
            row["t1_reduction"] = mle["t1_misalignment"] / max(row["t1_misalignment"], 1e-12)
            row["loss_change"] = row["nll"] / mle["nll"] - 1.0
    conditional = [r for r in rows if r["objective"] == "conditional"]
    best = min(conditional, key=lambda r: r["pep8_misalignment"]) if conditional else None
    summary = {"benchmark": BENCHMARK, "summary": True, "quick": args.quick, "train_steps": args.train_steps,
               "samples": args.samples, "background_cpu_cores": load.cores()}
    if best and mle:
        summary.update(best_conditional=best["label"], conditional_reduction=round(best["reduction"], 2),
                       conditional_loss_change=round(best["loss_change"], 4), target_reduction=5.0,
                       target_loss_change=0.05,
                       meets_target=best["reduction"] >= 5.0 and best["loss_change"] <= 0.05,
                       conditional_t1_reduction=round(best["t1_reduction"], 2))
    emit(summary)
    table = markdown_table(rows, COLUMNS)
    with open(os.path.join(args.results_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(f"# PEP 8 pretraining with feedback ({args.train_steps} steps, {args.samples} samples of "
                f"{args.max_new_tokens} bytes{', quick' if args.quick else ''})\n\n{table}\n")
    pareto_plot(rows, "nll", "pep8_misalignment", "label", os.path.join(args.results_dir, "pareto.png"),
                "held-out LM loss (nats/byte)", "misalignment (PEP 8 violations per byte, log)",
                "Pretraining with human feedback: PEP 8")
    pareto_plot(rows, "nll", "t1_misalignment", "label", os.path.join(args.results_dir, "pareto_t1.png"),
                "held-out LM loss (nats/byte)", "misalignment at temperature 1 (log)",
                "Pretraining with human feedback: PEP 8, samples at temperature 1")
    log(BENCHMARK, f"wrote {args.results_dir}/results.md, pareto.png and pareto_t1.png")
    print(table, file=__import__("sys").stderr)


if __name__ == "__main__":
    main()
