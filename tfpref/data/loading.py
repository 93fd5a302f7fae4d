"""Loading a run's training and validation data in the form its objective needs.

Objectives choose through their `load_data` classmethod: packed text (optionally scored by
--scorer for the feedback objectives), labelled examples, preference groups or prompts.
Loading never changes the config: what a run derives from its data (the class names of a
classification run, the format of a preference file) is read beforehand with `labeled_classes`
and `preference_kind`, so the config is complete when it is validated.
"""
import os

import numpy as np

from tfpref.data.corpus import jsonl_records, load_splits
from tfpref.data.labeled import labeled_classes, load_labeled_splits
from tfpref.data.pipeline import ArrayData, build_token_data
from tfpref.data.preferences import detect_format, load_preferences, preference_arrays
from tfpref.data.scored import load_scored_token_data
from tfpref.errors import UserError


def load_text_data(config, objective_cls, wanted=("train", "validation"), show_progress=True):
    """{split: TokenData or None}: packed windows of the corpus, scored when the objective needs scores."""
    data = config.data
    if objective_cls.needs_scores:
        loaded = load_scored_token_data(config, objective_cls, wanted, show_progress)
    else:
        splits = load_splits(data.data, data.text_field, data.max_chunk_chars)
        loaded = {split: build_token_data(splits[split], data.seq_len) if splits[split] else None
                  for split in wanted}
    if "train" in wanted and (loaded["train"] is None or loaded["train"].num_examples == 0):
        raise UserError(f"--data {data.data}: fewer than --seq_len {data.seq_len} + 1 training tokens")
    return loaded


def load_labeled_data(config, wanted):
    """Padded, labelled examples for classification, labelled with the ids of config.classes
    (which `labeled_classes` gives); the data's training classes must be those."""
    splits, classes = load_labeled_splits(config.data)
    if classes != config.classes:
        raise UserError(f"--data {config.data.data}: classes {classes} differ from the run's {config.classes}")
    class_ids = {name: i for i, name in enumerate(classes)}

    def token_data(split):
        texts, labels = splits[split]
        known = [(text, class_ids[label]) for text, label in zip(texts, labels) if label in class_ids]
        if not known:
            return None
        return build_token_data([text for text, _ in known], config.data.seq_len, packed=False,
                                labels=[label for _, label in known])

    return {split: token_data(split) for split in wanted}


def _check_preference_file(path, objective=None):
    if not (path.endswith(".jsonl") and os.path.isfile(path)):
        who = f" --objective {objective}" if objective else ""
        raise UserError(f"--data {path}:{who} needs a preference JSONL file "
                        f"(make one with: tfpref preferences make)")


def preference_kind(path):
    """'pairwise', 'ranking', 'rating' or 'clicks': the PreferenceSet.kind of preference file `path`.

    The first record decides, as in `load_preferences`, so the rest is not read (loading the data
    checks every record).
    """
    _check_preference_file(path)
    for number, record in jsonl_records(path):
        return detect_format(path, number, record)
    raise UserError(f"{path}: no preference records")


def load_preference_data(config):
    """PreferenceSet of --data (a preference JSONL file; see tfpref.data.preferences)."""
    _check_preference_file(config.data.data, config.train.objective)
    return load_preferences(config.data.data)


def preference_split_arrays(config, data, wanted, pairs_only=False):
    """{split: ArrayData or None} of a PreferenceSet's `wanted` splits (by prompt: see prompt_split)."""
    loaded = {}
    for split in wanted:
        part = data.split(split)
        if not part.items or (pairs_only and not part.comparisons()):
            loaded[split] = None
            continue
        arrays = preference_arrays(part, config.data.seq_len, pairs_only)
        if "weight" in arrays:  # raters or impressions, as weights of mean 1
            arrays["weight"] = arrays["weight"] / np.float32(arrays["weight"].mean())
        loaded[split] = ArrayData(arrays, config.data.seq_len)
    if "train" in wanted and loaded["train"] is None:
        what = "comparisons (pairs of completions of one prompt that differ)" if pairs_only else "records"
        raise UserError(f"--data {data.source}: no training {what}")
    return loaded


__all__ = ["load_text_data", "labeled_classes", "load_labeled_data", "preference_kind", "load_preference_data",
           "preference_split_arrays"]
