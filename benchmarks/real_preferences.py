"""Preference data shaped like real human judgements: time, peak memory and accuracy on 2 cores.

1. A reward model on 10,000 unconditioned pairs (empty prompts, extra fields, 10% flipped labels;
   tfpref.data.synthetic), validated on a separate file of 2,000 pairs (`--validation_data`),
   trained by `train.py` in a child process: wall time, the child's peak RSS, held-out accuracy.
   The reference, in the same run: a bag-of-words logistic regression in NumPy, which knows what
   the task is about (word counts) and so sets the accuracy to reach.
2. 25,000 single-text ratings under one prompt, read and turned into pairs for a pairwise loss
   (`--pairs_per_item`): time and peak memory, against the all-pairs product a naive pairing makes.

    python benchmarks/real_preferences.py                 # ~3 minutes on 2 cores
    python benchmarks/real_preferences.py --model transformer
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

from bench_common import emit, log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # flags of the reward model per --model
    "conv": ["--model", "conv", "--d_model", "48", "--num_layers", "3", "--reward_pooling", "mean",
             "--learning_rate", "3e-3"],
    "transformer": ["--model", "transformer", "--d_model", "64", "--num_layers", "2", "--num_heads", "2",
                    "--ff_dim", "128", "--learning_rate", "1e-3"],
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_dir", default="logs/real_preferences", help="Data files and the run directory.")
    parser.add_argument("--model", default="conv", choices=sorted(MODELS), help="Reward model architecture.")
    parser.add_argument("--pairs", type=int, default=10000, help="Training pairs.")
    parser.add_argument("--epochs", type=int, default=2, help="Passes over the training pairs.")
    return parser.parse_args()


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def bag_of_words_accuracy(train, test, steps=300, learning_rate=0.5):
    """Held-out accuracy of logistic regression on word-count differences (chosen minus rejected)."""
    vocabulary = sorted({w for r in train for w in (r["chosen"] + " " + r["rejected"]).split()})
    index = {w: i for i, w in enumerate(vocabulary)}

    def features(records):
        x = np.zeros((len(records), len(vocabulary)))
        for row, r in enumerate(records):
            for word in r["chosen"].split():
                x[row, index[word]] += 1
            for word in r["rejected"].split():
                if word in index:
                    x[row, index[word]] -= 1
        return x

    x, weights = features(train), np.zeros(len(vocabulary))
    for _ in range(steps):  # P(chosen wins) = sigmoid(w . x); every label is 1
        p = 1 / (1 + np.exp(-x @ weights))
        weights += learning_rate * x.T @ (1 - p) / len(x)
    return float(np.mean(features(test) @ weights > 0))


def reward_model(args, data_dir):
    from tfpref.data.synthetic import word_preference_pairs

    train = word_preference_pairs(args.pairs, seed=0, noise=0.1)
    test = word_preference_pairs(args.pairs // 5, seed=1, noise=0.0)
    train_path = write_jsonl(os.path.join(data_dir, "pairs_train.jsonl"), train)
    test_path = write_jsonl(os.path.join(data_dir, "pairs_test.jsonl"), test)
    run_dir = os.path.join(data_dir, f"rm-{args.model}")
    batch = 32
    command = [sys.executable, "train.py", "--objective", "reward_model", "--data", train_path,
               "--validation_data", test_path, *MODELS[args.model], "--seq_len", "64", "--batch_size", str(batch),
               "--train_steps", str(args.epochs * args.pairs // batch), "--eval_every", "1000000",
               "--eval_batches", str(-(-len(test) // batch)), "--no-export", "--no_progress", "--model_dir", run_dir]
    log("real_preferences", " ".join(command))
    began = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"training failed:\n{done.stderr}")
    with open(os.path.join(run_dir, "train_result.json"), encoding="utf-8") as f:
        result = json.load(f)
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        split_by = json.load(f)["data"]["split_by"]
    reference = bag_of_words_accuracy(train, test)
    emit({"benchmark": "real_preferences", "stage": "reward model", "model": args.model, "pairs": len(train),
          "validation_pairs": len(test), "label_noise": 0.1, "steps": int(result["step"]),
          "split_by": split_by, "seconds": round(seconds, 1),
          "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
          "validation_accuracy": round(result["validation_accuracy"], 4),
          "bag_of_words_accuracy": round(reference, 4),
          "accuracy_vs_bag_of_words": round(result["validation_accuracy"] / reference, 3)})


def many_ratings(data_dir, count=25000):
    from tfpref.config import RunConfig
    from tfpref.data.loading import load_preference_data, preference_split_arrays

    rng = np.random.default_rng(2)
    records = [{"prompt": "", "completion": f"review number {i}: " + " ".join(rng.choice(["good", "bad", "fine"], 5)),
                "rating": [int(v) for v in rng.integers(1, 6, size=3)], "rater_ids": [1, 2, 3]}
               for i in range(count)]
    path = write_jsonl(os.path.join(data_dir, "ratings.jsonl"), records)
    config = RunConfig(model_dir=os.path.join(data_dir, "unused"))
    config.data.data, config.data.seq_len, config.train.objective = path, 64, "reward_model"
    tracemalloc.start()
    began = time.perf_counter()
    data = load_preference_data(config)
    loaded = preference_split_arrays(config, data, ("train",), pairs_only=True)
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    pairs = loaded["train"].num_examples
    all_pairs = count * (count - 1) // 2
    emit({"benchmark": "real_preferences", "stage": "ratings as pairs", "ratings": count, "raters_per_rating": 3,
          "split_by": data.split_by, "pairs_per_item": config.align.pairs_per_item, "training_pairs": pairs,
          "all_pairs_product": all_pairs, "pairs_vs_all_pairs": round(pairs / all_pairs, 6),
          "seconds": round(seconds, 1), "peak_python_mib": round(peak / 2**20, 1)})


def main():
    args = parse_args()
    os.makedirs(args.results_dir, exist_ok=True)
    sys.path.insert(0, REPO)
    from tfpref.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()
    many_ratings(args.results_dir)
    reward_model(args, args.results_dir)


if __name__ == "__main__":
    main()
