"""Loading a run's training and validation data in the form its objective needs.

Objectives choose through their `load_data` classmethod: packed text (optionally scored by
--scorer for the feedback objectives), labelled examples, preference groups or prompts.
"""
from tfpref.data.corpus import load_splits
from tfpref.data.pipeline import build_token_data
from tfpref.errors import UserError


def load_text_data(config, objective_cls, wanted=("train", "validation"), show_progress=True):
    """{split: TokenData or None}: packed windows of the corpus, scored when the objective needs scores."""
    data = config.data
    if objective_cls.needs_scores:
        from tfpref.data.scored import load_scored_token_data

        loaded = load_scored_token_data(config, objective_cls, wanted, show_progress)
    else:
        splits = load_splits(data.data, data.text_field, data.max_chunk_chars)
        loaded = {split: build_token_data(splits[split], data.seq_len) if splits[split] else None
                  for split in wanted}
    if "train" in wanted and (loaded["train"] is None or loaded["train"].num_examples == 0):
        raise UserError(f"--data {data.data}: fewer than --seq_len {data.seq_len} + 1 training tokens")
    return loaded


def load_labeled_data(config, wanted):
    """Padded, labelled examples for classification; fills config.classes from the training split."""
    from tfpref.data.labeled import load_labeled_splits

    splits, classes = load_labeled_splits(config.data)
    if config.classes and config.classes != classes:
        raise UserError(f"--data {config.data.data}: classes {classes} differ from the run's {config.classes}")
    config.classes = classes
    class_ids = {name: i for i, name in enumerate(classes)}

    def token_data(split):
        texts, labels = splits[split]
        known = [(t, class_ids[l]) for t, l in zip(texts, labels) if l in class_ids]
        if not known:
            return None
        return build_token_data([t for t, _ in known], config.data.seq_len, packed=False,
                                labels=[l for _, l in known])

    return {split: token_data(split) for split in wanted}


def load_preference_data(config):
    """PreferenceSet of --data (a preference JSONL file; see tfpref.data.preferences)."""
    import os

    from tfpref.data.preferences import load_preferences

    path = config.data.data
    if not (path.endswith(".jsonl") and os.path.isfile(path)):
        raise UserError(f"--data {path}: --objective {config.train.objective} needs a preference JSONL file "
                        f"(make one with: python -m tfpref.preferences make)")
    return load_preferences(path)


def preference_split_arrays(config, data, wanted, pairs_only=False):
    """{split: ArrayData or None} of a PreferenceSet: 'validation' is held-out prompts, 'test' too."""
    import numpy as np

    from tfpref.data.pipeline import ArrayData
    from tfpref.data.preferences import preference_arrays

    loaded = {}
    for split in wanted:
        part = data.split("train" if split == "train" else "validation")
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
