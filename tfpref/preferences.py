"""Preference data tools, behind `tfpref preferences make | export | import`.

  make    sample pairs of completions with a trained policy for prompts cut from held-out stdlib
          functions (or --data's prompts), and label them with a simulated annotator: Bradley-Terry
          on the scorer's rewards (-score) with --annotator_temperature, so labels are noisy as
          human labels are. Prints the noise ceiling: the accuracy a perfect reward model would get.
          With --completions_per_prompt K > 2 the annotator ranks K completions (Plackett-Luce,
          whose pairwise marginals are that same Bradley-Terry): K(K-1)/2 comparisons from K
          samples, as InstructGPT's labellers ranked 4 to 9 completions.
  export  write pairs to a CSV (or JSONL) for human raters: completions A and B in random order,
          an empty 'preferred' column to fill with a or b.
  import  read a labelled CSV/JSONL back into pairwise JSONL (prompt, chosen, rejected); rows left
          unlabelled are skipped and counted.

Example:
    tfpref preferences make --policy_dir logs/transformer-mle --output pairs.jsonl --num_pairs 2000
    tfpref preferences export --input pairs.jsonl --output to_label.csv
    tfpref preferences import --input labelled.csv --output human_pairs.jsonl
"""
import csv
import json
import os

import numpy as np

from tfpref.data.corpus import jsonl_records
from tfpref.data.preferences import load_preferences
from tfpref.data.prompts import encode_prompts, policy_prompts
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError, location
from tfpref.models.sampling import Sampler
from tfpref.rewards import ScorerReward
from tfpref.runs import load_run

LABEL_COLUMNS = ["id", "prompt", "completion_a", "completion_b", "preferred"]


def simulated_labels(rewards_a, rewards_b, temperature, rng):
    """(a_preferred bool [n], p_a [n]): a Bradley-Terry annotator, P(a) = sigmoid((r_a - r_b) / T)."""
    p_a = 1.0 / (1.0 + np.exp(-(np.asarray(rewards_a) - np.asarray(rewards_b)) / temperature))
    return rng.random(len(p_a)) < p_a, p_a


def simulated_ranks(rewards, temperature, rng):
    """Ranks [n, k] (1 = best) drawn from Plackett-Luce on rewards [n, k] / T.

    Sorting utilities plus Gumbel noise draws a Plackett-Luce ranking; any two completions end up
    in the order Bradley-Terry at the same temperature gives, so pairs and rankings share a ceiling.
    """
    noisy = np.asarray(rewards) / temperature + rng.gumbel(size=np.shape(rewards))
    return np.argsort(np.argsort(-noisy, axis=1), axis=1) + 1


def check_group_settings(completions_per_prompt, batch_size):
    """UserError unless the sampler's batch holds whole groups of at least 2 completions."""
    if completions_per_prompt < 2:
        raise UserError(f"--completions_per_prompt {completions_per_prompt}: the annotator needs at least "
                        "2 completions to compare")
    if batch_size < completions_per_prompt or batch_size % completions_per_prompt:
        raise UserError(f"--batch_size {batch_size}: must be a positive multiple of --completions_per_prompt "
                        f"{completions_per_prompt} (that many completions of each prompt)")


def make_preferences(policy_dir, num_records, scorer="pep8", annotator_temperature=0.01, data="stdlib",
                     split="test", prompt_chars=64, max_new_tokens=64, temperature=1.0, seed=0, batch_size=64,
                     completions_per_prompt=2):
    """[record] of `num_records` simulated preferences (see the module docstring): pairs, or
    rankings when `completions_per_prompt` > 2."""
    check_group_settings(completions_per_prompt, batch_size)
    config, model, _ = load_run(policy_dir, flag="--policy_dir")
    prompts = policy_prompts(data, split, prompt_chars)
    if not prompts:
        raise UserError(f"--data {data}: no prompts in the {split} split")
    reward = ScorerReward(scorer)
    sampler = Sampler(model, max_new_tokens)  # stops at the policy's end token, never emits its banned ids
    tokenizer = tokenizer_for(config)  # a keras-hub preset's, or bytes
    rng = np.random.default_rng(seed)
    k = completions_per_prompt
    records, attempt = [], 0
    while len(records) < num_records:
        chosen_prompts = [prompts[i] for i in rng.integers(0, len(prompts), batch_size // k)]
        rows = [p for p in chosen_prompts for _ in range(k)]  # k samples of each prompt, side by side
        ids, mask = encode_prompts(rows, tokenizer)
        if ids.shape[1] + max_new_tokens > model.backbone.max_seq_len:
            raise UserError(f"--max_new_tokens {max_new_tokens}: with prompts of {ids.shape[1]} tokens the samples "
                            f"exceed the policy's {model.backbone.max_seq_len} positions; lower it or --prompt_chars")
        out = sampler(ids, mask, temperature=temperature, seed=seed * 7919 + attempt)
        attempt += 1
        texts = [tokenizer.decode(t[m]) for t, m in zip(out["tokens"], out["mask"])]
        rewards = np.asarray(reward(rows, texts, out["finished"]), np.float64).reshape(-1, k)
        groups = [texts[i * k:(i + 1) * k] for i in range(len(chosen_prompts))]
        if k == 2:
            a_wins, p_a = simulated_labels(rewards[:, 0], rewards[:, 1], annotator_temperature, rng)
        else:
            ranks = simulated_ranks(rewards, annotator_temperature, rng)
        for i, (prompt, group) in enumerate(zip(chosen_prompts, groups)):
            if len(set(group)) < k or not all(text.strip() for text in group):
                continue  # a tie, or nothing to judge
            if k == 2:
                first, second = (0, 1) if a_wins[i] else (1, 0)
                records.append({"prompt": prompt, "chosen": group[first], "rejected": group[second],
                                "annotator_p": float(p_a[i] if a_wins[i] else 1 - p_a[i]),
                                "reward_chosen": float(rewards[i, first]),
                                "reward_rejected": float(rewards[i, second])})
            else:
                records.append({"prompt": prompt, "completions": group, "ranking": ranks[i].tolist(),
                                "annotator_rewards": rewards[i].tolist(),
                                "annotator_temperature": annotator_temperature})
            if len(records) == num_records:
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


def labelled_rows(path):
    """(line, row dict) of a CSV or JSONL file of `export_for_labelling`'s columns, labelled or not
    (the labelling page of `tfpref serve` reads the same files)."""
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
        yield from jsonl_records(path)


def import_labelled(input_path, output_path, overwrite=False):
    """Labelled rows of `input_path` as pairwise records in `output_path`; returns (written, skipped)."""
    records, skipped = [], 0
    for line, row in labelled_rows(input_path):
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
