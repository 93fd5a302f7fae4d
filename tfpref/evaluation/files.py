"""Evaluating a run on a whole file of its kind (evaluate.py --data FILE), and by group (--group_by).

A run's config is copied with `data.data` set to the file (its --validation_data cleared), and every
record of the file is read in the form the run's objective evaluates, none held back: text for
language models, labelled JSONL for classifiers, preference records for reward models and DPO,
prompts for RL. A reward model is evaluated with the loss that measures what the file says
(`file_reward_loss`): pairs and rankings by pairwise accuracy; ratings and clicks by Pearson's
correlation between reward and rating, and by the accuracy on the pairs the ratings imply (two
items of one prompt whose ratings differ by more than the run's --min_rating_gap, 0 by default:
`implied_pair_sums`), whatever loss the model was trained with.

--group_by FIELD writes the records of each value of FIELD to a JSONL file of their own
(`group_records`, `write_records`), and each is evaluated as a file: every loader is used as it is.
"""
import dataclasses
import json

import numpy as np

from tfpref.config import DEFAULT_REWARD_LOSS, RL_OBJECTIVES, REWARD_LOSS_KINDS
from tfpref.data.corpus import jsonl_records
from tfpref.data.loading import load_preference_data, preference_kind
from tfpref.data.scored import load_scored_token_data
from tfpref.data.splits import ALL
from tfpref.errors import UserError
from tfpref.objectives import OBJECTIVES

MISSING = "(missing)"  # the group of records without the --group_by field
VALUE_LOSSES = ("regression", "bce")  # reward losses against a value: a rating, a click-through rate


def file_config(config, path):
    """A copy of the run's `config` that reads `path` as its data (and no separate validation file)."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, data=str(path), validation_data=""))


def file_reward_loss(config, kind):
    """The reward loss a reward-model run is evaluated with on preference data of `kind`.

    Its own loss when that fits the data and measures what the data says; otherwise the kind's
    default: a Bradley-Terry model (trained on pairs) is judged on a ratings file by correlation
    with the ratings (regression), and a regression model on a pairs file by pairwise accuracy.
    """
    loss = config.align.reward_loss
    value_data = kind in ("rating", "clicks")
    if kind in REWARD_LOSS_KINDS[loss] and value_data == (loss in VALUE_LOSSES):
        return loss
    return DEFAULT_REWARD_LOSS[kind]


def evaluation_config(config, path):
    """`file_config`, with a reward model's loss chosen for the file (`file_reward_loss`)."""
    evaluated = file_config(config, path)
    if config.train.objective == "reward_model":
        loss = file_reward_loss(config, preference_kind(evaluated.data.data))
        evaluated = dataclasses.replace(evaluated, align=dataclasses.replace(config.align, reward_loss=loss))
    return evaluated


def load_eval_data(config, splits, scorer=None, show_progress=True):
    """{split: data or None} of the run's data in the form its objective evaluates; with a scorer,
    scored too (so the LM loss on aligned text can be reported), and `config.feedback.threshold` set to
    that scorer's threshold for the run (tfpref.data.thresholds), which the metrics then use."""
    objective_cls = OBJECTIVES[config.train.objective]
    if scorer is None or config.train.objective == "classify":
        return objective_cls.load_data(config, splits, show_progress)
    # The run's stored threshold is its own scorer's: another scorer's is decided afresh.
    threshold = config.feedback.threshold if scorer == config.feedback.scorer else -1.0
    scored = dataclasses.replace(config, feedback=dataclasses.replace(config.feedback, scorer=scorer,
                                                                      threshold=threshold))
    hooks = objective_cls if objective_cls.needs_scores else OBJECTIVES["mle"]
    loaded = load_scored_token_data(scored, hooks, splits, show_progress)
    config.feedback.threshold = scored.feedback.threshold
    return loaded


def load_file_data(config, scorer=None):
    """{part name: data} holding every record of the file `config.data.data` (an `evaluation_config`)
    in the form the run's objective evaluates, scored by `scorer` (a --scorer name) if given.

    RL runs have no per-example metrics on a file (their evaluation samples completions of its
    prompts): {}. The rest is the file's split "all": every record, as held-out data.
    """
    if config.train.objective in RL_OBJECTIVES:
        return {}
    loaded = load_eval_data(config, (ALL,), scorer, show_progress=False)
    return {name: data for name, data in loaded.items() if data is not None and data.num_examples > 0}


def rated_items(config, names):
    """{part name: [(prompt, target), ...]} of a ratings or clicks file's items, in the order of the
    part's rows (one row per item when not turned into pairs, as `preference_arrays` makes them).
    A part name is a split name, "all" included."""
    preferences = load_preference_data(config)
    return {name: [(item.prompt, item.target) for item in preferences.split(name).items] for name in names}


def implied_pair_sums(prompts, targets, rewards, min_gap=0.0, block=1024):
    """(correct, pairs): the pairs ratings (or click-through rates) imply, and those the rewards order
    the same way.

    A pair is two items of one prompt whose targets differ by more than `min_gap`; it is correct
    when the better-rated item has the strictly higher reward (a tie is wrong, as in pairwise
    accuracy on pairs). Every such pair counts once, however many items a prompt has; memory is
    `block` x (items of the largest prompt).
    """
    rows_by_prompt = {}
    for row, prompt in enumerate(prompts):
        rows_by_prompt.setdefault(prompt, []).append(row)
    targets, rewards = np.asarray(targets, np.float64), np.asarray(rewards, np.float64)
    correct = pairs = 0
    for rows in rows_by_prompt.values():
        t, r = targets[rows], rewards[rows]
        for start in range(0, len(rows), block):
            better = (t[start:start + block, None] - t[None, :]) > min_gap
            pairs += int(better.sum())
            correct += int((better & (r[start:start + block, None] > r[None, :])).sum())
    return correct, pairs


# ---- --group_by ----------------------------------------------------------------------------

def group_key(record, field):
    """The group of a record: its FIELD's value (JSON for a value that is not a string), or MISSING."""
    if field not in record:
        return MISSING
    value = record[field]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def group_records(path, field):
    """{group: [record, ...]} of the JSONL file `path` by `field` (see `group_key`), groups sorted by
    name with MISSING last; a UserError if `path` is not JSONL or no record has `field`."""
    if not str(path).endswith(".jsonl"):
        raise UserError(f"--group_by {field}: needs a JSONL --data file, got {path}")
    groups = {}
    for _, record in jsonl_records(path):
        groups.setdefault(group_key(record, field), []).append(record)
    if not groups:
        raise UserError(f"--data {path}: no records")
    if list(groups) == [MISSING]:
        raise UserError(f"--group_by {field}: no record of {path} has the field '{field}'")
    return {name: groups[name] for name in sorted(groups, key=lambda g: (g == MISSING, g))}


def write_records(path, records):
    """`records` as a JSONL file at `path` (a group's file, read by the same loaders as --data)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return path
