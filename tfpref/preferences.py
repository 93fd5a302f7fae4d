"""Preference data tools: `python -m tfpref.preferences make | export | import`.

  make    sample pairs of completions with a trained policy for prompts cut from held-out stdlib
          functions (or --data's prompts), and label them with a simulated annotator: Bradley-Terry
          on the scorer's rewards (-score) with --annotator_temperature, so labels are noisy as
          human labels are. Prints the noise ceiling: the accuracy a perfect reward model would get.
  export  write pairs to a CSV (or JSONL) for human raters: completions A and B in random order,
          an empty 'preferred' column to fill with a or b.
  import  read a labelled CSV/JSONL back into pairwise JSONL (prompt, chosen, rejected); rows left
          unlabelled are skipped and counted.

Example:
    python -m tfpref.preferences make --policy_dir logs/transformer-mle --output pairs.jsonl --num_pairs 2000
    python -m tfpref.preferences export --input pairs.jsonl --output to_label.csv
    python -m tfpref.preferences import --input labelled.csv --output human_pairs.jsonl
"""
import argparse
import csv
import json
import os
import sys

import numpy as np

from tfpref.errors import UserError, location

LABEL_COLUMNS = ["id", "prompt", "completion_a", "completion_b", "preferred"]


def simulated_labels(rewards_a, rewards_b, temperature, rng):
    """(a_preferred bool [n], p_a [n]): a Bradley-Terry annotator, P(a) = sigmoid((r_a - r_b) / T)."""
    p_a = 1.0 / (1.0 + np.exp(-(np.asarray(rewards_a) - np.asarray(rewards_b)) / temperature))
    return rng.random(len(p_a)) < p_a, p_a


def make_pairs(policy_dir, num_pairs, scorer="pep8", annotator_temperature=0.01, data="stdlib",
               split="test", prompt_chars=64, max_new_tokens=64, temperature=1.0, seed=0, batch_size=64):
    """[record] of `num_pairs` simulated preference pairs (see the module docstring)."""
    from tfpref.config import config_path
    from tfpref.data.prompts import encode_prompts, policy_prompts
    from tfpref.data.tokenizer import ByteTokenizer
    from tfpref.evaluation.run import load_run
    from tfpref.models.sampling import Sampler
    from tfpref.rewards import ScorerReward

    if not os.path.exists(config_path(policy_dir)):
        raise UserError(f"--policy_dir {policy_dir}: not a run directory (no config.json)")
    _, model, _, _ = load_run(policy_dir)
    prompts = policy_prompts(data, split, prompt_chars)
    if not prompts:
        raise UserError(f"--data {data}: no prompts in the {split} split")
    reward = ScorerReward(scorer)
    sampler = Sampler(model, max_new_tokens)
    tokenizer = ByteTokenizer()
    rng = np.random.default_rng(seed)
    records, attempt = [], 0
    while len(records) < num_pairs:
        chosen_prompts = [prompts[i] for i in rng.integers(0, len(prompts), batch_size // 2)]
        rows = [p for p in chosen_prompts for _ in range(2)]  # two samples of each prompt, side by side
        ids, mask = encode_prompts(rows)
        out = sampler(ids, mask, temperature=temperature, seed=seed * 7919 + attempt)
        attempt += 1
        texts = [tokenizer.decode(t[m]) for t, m in zip(out["tokens"], out["mask"])]
        rewards = reward(rows, texts, out["finished"])
        a, b = slice(0, None, 2), slice(1, None, 2)
        a_wins, p_a = simulated_labels(rewards[a], rewards[b], annotator_temperature, rng)
        for i, prompt in enumerate(chosen_prompts):
            text_a, text_b = texts[2 * i], texts[2 * i + 1]
            if text_a == text_b or not text_a.strip() or not text_b.strip():
                continue  # a tie, or nothing to judge
            first = 2 * i if a_wins[i] else 2 * i + 1
            second = 2 * i + 1 if a_wins[i] else 2 * i
            records.append({"prompt": prompt, "chosen": texts[first], "rejected": texts[second],
                            "annotator_p": float(p_a[i] if a_wins[i] else 1 - p_a[i]),
                            "reward_chosen": float(rewards[first]), "reward_rejected": float(rewards[second])})
            if len(records) == num_pairs:
                break
    return records


def write_new(path, write, overwrite=False):
    """Write `path` through `write(file)`, beside it first: a crash never leaves half a file, and an
    existing file is only replaced with `overwrite`."""
    if os.path.exists(path) and not overwrite:
        raise UserError(f"--output {path} exists; choose another path or pass --overwrite")
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8", newline="") as f:
        write(f)
    os.replace(partial, path)


def write_jsonl(path, records, overwrite=False):
    write_new(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records), overwrite)


def export_for_labelling(input_path, output_path, seed=0, overwrite=False):
    """Write the pairs of `input_path` (any preference format) for raters; returns the row count."""
    from tfpref.data.preferences import load_preferences

    rng = np.random.default_rng(seed)
    rows = []
    for i, (prompt, chosen, rejected, _, _) in enumerate(load_preferences(input_path).comparisons()):
        a, b = (chosen, rejected) if rng.random() < 0.5 else (rejected, chosen)
        rows.append({"id": i, "prompt": prompt, "completion_a": a, "completion_b": b, "preferred": ""})
    if output_path.endswith(".csv"):
        def write(f):
            writer = csv.DictWriter(f, LABEL_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        write_new(output_path, write, overwrite)
    else:
        write_jsonl(output_path, rows, overwrite)
    return len(rows)


def _labelled_rows(path):
    """(line, row dict) of a labelled CSV or JSONL file."""
    if path.endswith(".csv"):
        try:
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                missing = [c for c in LABEL_COLUMNS[1:] if c not in (reader.fieldnames or [])]
                if missing:
                    raise UserError(f"{location(path, 1, missing[0])}: column is missing from the header")
                start = reader.line_num + 1  # a quoted field may span lines: report where the row starts
                for row in reader:
                    yield start, row
                    start = reader.line_num + 1
        except UnicodeDecodeError:
            raise UserError(f"{path}: not valid UTF-8") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    else:
        from tfpref.data.corpus import jsonl_records

        yield from jsonl_records(path)


def import_labelled(input_path, output_path, overwrite=False):
    """Labelled rows of `input_path` as pairwise records in `output_path`; returns (written, skipped)."""
    records, skipped = [], 0
    for line, row in _labelled_rows(input_path):
        for column in LABEL_COLUMNS[1:4]:
            if not isinstance(row.get(column), str):
                raise UserError(f"{location(input_path, line, column)} is missing or not a string")
        preferred = row.get("preferred")
        preferred = "" if preferred is None else str(preferred).strip().lower()
        if not preferred:
            skipped += 1
            continue
        if preferred not in ("a", "b"):
            raise UserError(f"{location(input_path, line, 'preferred')} must be a or b (or empty), got {preferred!r}")
        chosen, rejected = ((row["completion_a"], row["completion_b"]) if preferred == "a"
                            else (row["completion_b"], row["completion_a"]))
        records.append({"prompt": row["prompt"], "chosen": chosen, "rejected": rejected})
    write_jsonl(output_path, records, overwrite)
    return len(records), skipped


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m tfpref.preferences", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="simulate labelled pairs with a policy and a scorer",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    make.add_argument("--policy_dir", required=True, help="Run directory of the policy that samples completions.")
    make.add_argument("--output", required=True, help="Pairwise JSONL file to write.")
    make.add_argument("--num_pairs", type=int, default=1000, help="Pairs to write.")
    make.add_argument("--scorer", default="pep8", help="Scorer whose minus score is the annotator's hidden reward.")
    make.add_argument("--annotator_temperature", type=float, default=0.01,
                      help="Bradley-Terry temperature of the simulated annotator, in reward units: "
                           "P(a preferred) = sigmoid((r_a - r_b) / T). Lower is a more reliable annotator.")
    make.add_argument("--data", default="stdlib", help="Corpus (or JSONL with 'prompt') the prompts come from.")
    make.add_argument("--split", default="test", help="Split of --data: test is held out from training.")
    make.add_argument("--prompt_chars", type=int, default=64, help="Longest prompt, in characters.")
    make.add_argument("--max_new_tokens", type=int, default=64, help="Longest completion, in tokens.")
    make.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature.")
    make.add_argument("--seed", type=int, default=0, help="Seed of prompts, samples and labels.")
    make.add_argument("--batch_size", type=int, default=64,
                      help="Completions sampled at once (two per prompt). Larger is faster; the pairs "
                           "drawn for a --seed depend on it.")
    make.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    export = commands.add_parser("export", help="write pairs to CSV/JSONL for human raters",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    export.add_argument("--input", required=True, help="Preference JSONL (any format; pairs are derived).")
    export.add_argument("--output", required=True,
                        help="A .csv file (otherwise JSONL) with an empty 'preferred' column.")
    export.add_argument("--seed", type=int, default=0, help="Seed of the A/B order.")
    export.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    imp = commands.add_parser("import", help="read a labelled CSV/JSONL back as pairwise JSONL",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    imp.add_argument("--input", required=True, help="The labelled .csv or .jsonl ('preferred': a or b).")
    imp.add_argument("--output", required=True, help="Pairwise JSONL file to write.")
    imp.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    return parser


def main(argv=None):
    from tfpref.cli import run_cli

    return run_cli(_main, sys.argv[1:] if argv is None else argv)


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.command == "make":
        if args.num_pairs <= 0 or args.annotator_temperature <= 0:
            raise UserError("--num_pairs and --annotator_temperature must be positive")
        if args.batch_size < 2 or args.batch_size % 2:
            raise UserError(f"--batch_size {args.batch_size}: must be a positive even number "
                            "(two completions of each prompt)")
        if os.path.exists(args.output) and not args.overwrite:  # before minutes of sampling, not after
            raise UserError(f"--output {args.output} exists; choose another path or pass --overwrite")
        from tfpref.runtime import import_tensorflow_quietly

        import_tensorflow_quietly()
        records = make_pairs(args.policy_dir, args.num_pairs, args.scorer, args.annotator_temperature,
                             args.data, args.split, args.prompt_chars, args.max_new_tokens, args.temperature,
                             args.seed, args.batch_size)
        write_jsonl(args.output, records, args.overwrite)
        ceiling = float(np.mean([max(r["annotator_p"], 1 - r["annotator_p"]) for r in records]))
        print(json.dumps({"output": args.output, "pairs": len(records), "noise_ceiling": round(ceiling, 4),
                          "annotator_temperature": args.annotator_temperature}))
    elif args.command == "export":
        count = export_for_labelling(args.input, args.output, args.seed, args.overwrite)
        print(f"wrote {count} pairs to {args.output}; fill its 'preferred' column with a or b")
    else:
        written, skipped = import_labelled(args.input, args.output, args.overwrite)
        print(f"wrote {written} labelled pairs to {args.output} ({skipped} unlabelled rows skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
