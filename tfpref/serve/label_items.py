"""What the labelling page shows: items read from a file, and the records a label becomes.

An item is a prompt and the completions a labeller judges, in one of three tasks:
  * pair: choose the better of two completions (keys 1 and 2);
  * rank: order k completions, best first;
  * rate: rate one completion on a scale of 1 to `scale`.
The input is any of:
  * a file of `tfpref preferences export` (CSV or JSONL: prompt, completion_a, completion_b): pairs;
  * a preference JSONL file (`tfpref preferences make`, or any of tfpref's formats): pairwise and
    ranking records become pair and rank items with their completions in a shuffled order (a labeller
    must not see the old label in the order), rating and clicks records become rate items;
  * prompts alone (JSONL with a "prompt" field, or plain text, one prompt a line): their completions
    are sampled from the served model when the item is first shown (`--label_task`, `--label_k`).
A label becomes a record of tfpref's pairwise, ranking or rating format (prompt, chosen/rejected;
completions/ranking; completion/rating), plus "item_id": ready for `train.py --objective reward_model`.
An item's id is a hash of its prompt and completions (of its prompt and position, for prompts
alone): the same on every restart, so a restarted server skips what is already labelled.
"""
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from tfpref.data.corpus import jsonl_records
from tfpref.data.preferences import load_preferences
from tfpref.errors import UserError, location
from tfpref.preferences import labelled_rows

TASKS = ("pair", "rank", "rate")
EXPORT_COLUMNS = ("prompt", "completion_a", "completion_b")


@dataclass(frozen=True)
class LabelItem:
    item_id: str
    task: str                    # pair, rank or rate
    prompt: object               # text, or a conversation: a list of {"role", "content"} messages
    completions: tuple = None    # None: to be sampled from the model (prompts alone)
    count: int = 2               # completions the task shows

    def public(self, completions):
        """The item as the page receives it (completions given: the item's own, or sampled)."""
        return {"item_id": self.item_id, "task": self.task, "prompt": self.prompt, "completions": list(completions)}


def item_id(*parts):
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _shuffled(values, key):
    """`values` in an order that depends only on `key`: the same after a restart."""
    order = np.random.default_rng(int(key, 16)).permutation(len(values))
    return tuple(values[i] for i in order)


def _messages(prompt):
    """A Preference's prompt as JSON: text, or the conversation as a list of messages."""
    if isinstance(prompt, tuple):
        return [{"role": role, "content": content} for role, content in prompt]
    return prompt


def _completion(completion):
    if isinstance(completion, tuple):  # assistant messages
        return [{"role": role, "content": content} for role, content in completion]
    return completion


def _first_record(path):
    if path.endswith(".csv"):
        return "csv"
    for _, record in jsonl_records(path):
        return record
    return None


def read_items(path, task="pair", k=4):
    """The LabelItems of the file `path` (see the module docstring); `task` and `k` apply to prompts alone."""
    if task not in TASKS:
        raise UserError(f"--label_task must be one of {', '.join(TASKS)}, got {task!r}")
    first = _first_record(path) if not path.endswith(".txt") else None
    if first == "csv" or (isinstance(first, dict) and "completion_a" in first):
        items = []
        for line, row in labelled_rows(path):
            for column in EXPORT_COLUMNS:
                if not isinstance(row.get(column), str):
                    raise UserError(f"{location(path, line, column)} is missing or not a string")
            completions = (row["completion_a"], row["completion_b"])
            items.append(LabelItem(item_id("pair", row["prompt"], completions), "pair", row["prompt"], completions))
        return _checked(items, path)
    if isinstance(first, dict) and any(f in first for f in ("chosen", "completions", "rating", "clicks")):
        return _checked(_preference_items(path), path)
    return _checked(_prompt_items(path, task, k), path)


def _preference_items(path):
    data = load_preferences(path, split_by="record")
    items = []
    for preference in data.items:
        prompt = _messages(preference.prompt)
        completions = tuple(_completion(c) for c in preference.completions)
        if len(completions) == 1:
            items.append(LabelItem(item_id("rate", prompt, completions), "rate", prompt, completions, 1))
            continue
        task = "pair" if len(completions) == 2 else "rank"
        key = item_id(task, prompt, sorted(json.dumps(c, ensure_ascii=False) for c in completions))
        items.append(LabelItem(key, task, prompt, _shuffled(completions, key), len(completions)))
    return items


def _prompt_items(path, task, k):
    count = {"pair": 2, "rank": k, "rate": 1}[task]
    if task == "rank" and k < 2:
        raise UserError(f"--label_k must be at least 2 to rank, got {k}")
    prompts = []
    if path.endswith(".jsonl") or path.endswith(".json"):
        for line, record in jsonl_records(path):
            if "prompt" not in record:
                raise UserError(f"{location(path, line, 'prompt')} is missing")
            prompts.append(record["prompt"])
    else:
        try:
            with open(path, encoding="utf-8") as f:
                prompts = [line.rstrip("\n").replace("\\n", "\n") for line in f if line.strip()]
        except UnicodeDecodeError:
            raise UserError(f"{path}: not valid UTF-8") from None
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    return [LabelItem(item_id(task, count, index, prompt), task, prompt, None, count)
            for index, prompt in enumerate(prompts)]


def _checked(items, path):
    if not items:
        raise UserError(f"{path}: nothing to label")
    return items


def label_record(item, completions, answer, scale):
    """The training record of `answer` to `item` shown with `completions`, or a UserError.

    answer: {"choice": 0 or 1} (pair: the better completion's index), {"order": [indices, best
    first]} (rank), or {"rating": 1..scale} (rate).
    """
    base = {"prompt": item.prompt, "item_id": item.item_id}
    if item.task == "pair":
        choice = answer.get("choice")
        if choice not in (0, 1) or isinstance(choice, bool):
            raise UserError("choice must be 0 or 1")
        return {**base, "chosen": completions[choice], "rejected": completions[1 - choice]}
    if item.task == "rank":
        order = answer.get("order")
        if not isinstance(order, list) or sorted(order) != list(range(len(completions))) or \
                any(isinstance(i, bool) for i in order):
            raise UserError(f"order must list the completions' indices 0..{len(completions) - 1}, best first")
        ranking = [0] * len(completions)
        for rank, index in enumerate(order, start=1):
            ranking[index] = rank
        return {**base, "completions": list(completions), "ranking": ranking}
    rating = answer.get("rating")
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= scale:
        raise UserError(f"rating must be an integer from 1 to {scale}")
    return {**base, "completion": completions[0], "rating": rating}


__all__ = ["LabelItem", "TASKS", "read_items", "label_record", "item_id"]
