"""Tokenizers at equal wall-clock time: bytes per token and held-out bits per byte of MLE runs.

For each of `--tokenizers` (byte, bpe, unigram), a short calibration run measures the seconds per
optimizer step of the same model on the same corpus; the real run then gets as many steps as fit in
`--seconds`, so every tokenizer has the same training time. Prints one JSON line per tokenizer with
its vocabulary training time, bytes per token, steps, wall seconds and validation bits per byte (exact
for every vocabulary: the NLL of the text over its UTF-8 bytes), and a summary line.

    python benchmarks/tokenizers_bpb.py                          # stdlib, 5 minutes per tokenizer
    python benchmarks/tokenizers_bpb.py --data corpus.jsonl --seconds 120
"""
import argparse
import os
import shutil
import time

from bench_common import BackgroundLoad, emit, log, train_once

BENCHMARK = "tokenizers_bpb"
CALIBRATION_STEPS = 40


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="stdlib", help="Corpus, as train.py's --data.")
    parser.add_argument("--text_field", default="text", help="JSONL field of the text.")
    parser.add_argument("--tokenizers", default="byte,bpe,unigram")
    parser.add_argument("--vocab_size", type=int, default=2048, help="Pieces of the subword vocabularies.")
    parser.add_argument("--seconds", type=float, default=300.0, help="Training time of every run.")
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=128, help="Tokens per example, for every tokenizer.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--results_dir", default="logs/tokenizers_bpb")
    return parser.parse_args()


def run_config(args, tokenizer, steps, name):
    from tfpref.config import RunConfig

    config = RunConfig(model_dir=os.path.join(args.results_dir, name))
    config.data.data, config.data.text_field, config.data.seq_len = args.data, args.text_field, args.seq_len
    config.model.tokenizer = tokenizer
    if tokenizer != "byte":
        config.model.vocab_size = args.vocab_size
    config.model.d_model, config.model.num_layers = args.d_model, args.num_layers
    config.model.num_heads, config.model.ff_dim = max(1, args.d_model // 64), 4 * args.d_model
    config.train.objective, config.train.train_steps, config.train.batch_size = "mle", steps, args.batch_size
    config.train.warmup_steps = min(100, steps // 10)
    config.runtime.export, config.runtime.eval_every, config.runtime.checkpoint_every = False, 10 ** 9, 10 ** 9
    return config


def seconds_per_step(args, tokenizer):
    """(seconds per step, seconds to train the vocabulary) from two short runs of the same model: the
    difference of their times cancels what does not grow with steps (loading, tracing)."""
    vocabulary = 0.0
    if tokenizer != "byte":  # first: later runs of this process reuse the trained vocabulary
        from tfpref.data.tokenizers import tokenizer_for

        config = run_config(args, tokenizer, 1, f"vocabulary-{tokenizer}")
        began = time.perf_counter()
        tokenizer_for(config)
        vocabulary = time.perf_counter() - began
    times = []
    for steps in (CALIBRATION_STEPS // 4, CALIBRATION_STEPS):
        config = run_config(args, tokenizer, steps, f"calibrate-{tokenizer}-{steps}")
        shutil.rmtree(config.model_dir, ignore_errors=True)
        times.append(train_once(config)[1])
    return (times[1] - times[0]) / (CALIBRATION_STEPS - CALIBRATION_STEPS // 4), vocabulary


def main():
    args = parse_args()
    from tfpref.evaluation.run import evaluate_run

    os.makedirs(args.results_dir, exist_ok=True)
    load, rows = BackgroundLoad(), []
    for tokenizer in args.tokenizers.split(","):
        per_step, vocabulary_seconds = seconds_per_step(args, tokenizer)
        steps = max(1, int(args.seconds / per_step))
        config = run_config(args, tokenizer, steps, tokenizer)
        log(BENCHMARK, f"{tokenizer}: {per_step * 1000:.0f} ms/step, training {steps} steps in {config.model_dir}")
        _, seconds = train_once(config)
        metrics = evaluate_run(config.model_dir, sampling=None)["metrics"]
        row = {"benchmark": BENCHMARK, "data": args.data, "tokenizer": tokenizer,
               "vocab_size": args.vocab_size if tokenizer != "byte" else 256,
               "vocabulary_seconds": round(vocabulary_seconds, 1), "ms_per_step": round(per_step * 1000, 1),
               "steps": steps, "train_seconds": seconds, "bytes_per_token": metrics.get("bytes_per_token", 1.0),
               "validation_bits_per_byte": metrics["bits_per_byte"]}
        rows.append(row)
        emit(row)
    byte = next((r for r in rows if r["tokenizer"] == "byte"), None)
    summary = {"benchmark": BENCHMARK, "summary": True, "seconds": args.seconds,
               "background_cpu_cores": load.cores()}
    if byte:
        summary.update({f"{r['tokenizer']}_bpb_vs_byte": round(r["validation_bits_per_byte"]
                                                               / byte["validation_bits_per_byte"], 3)
                        for r in rows})
    emit(summary)


if __name__ == "__main__":
    main()
