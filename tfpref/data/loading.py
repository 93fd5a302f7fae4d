"""Loading a run's training and validation data in the form its objective needs.

Objectives choose through their `load_data` classmethod: packed text (optionally scored by
--scorer for the feedback objectives), labelled examples, preference groups or prompts.
Loading never changes the config: what a run derives from its data (the class names of a
classification run, the format of a preference file) is read beforehand with `labeled_classes`
and `preference_kind`, so the config is complete when it is validated.
"""
import dataclasses
import os

import numpy as np

from tfpref.data.chat import is_conversation
from tfpref.data.corpus import jsonl_records, load_splits
from tfpref.data.labeled import labeled_classes, labeled_classes_of, load_labeled_splits
from tfpref.data.pipeline import ArrayData, build_token_data
from tfpref.data.preferences import detect_format, load_preferences, preference_arrays
from tfpref.data.scored import load_scored_token_data
from tfpref.data.splits import select
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError


def load_text_data(config, objective_cls, wanted=("train", "validation"), show_progress=True):
    """{split: TokenData or None}: packed windows of the corpus, scored when the objective needs scores."""
    data = config.data
    if objective_cls.needs_scores:
        loaded = load_scored_token_data(config, objective_cls, wanted, show_progress)
    else:
        parts = load_splits(data.data, data.text_field, data.max_chunk_chars, data.validation_data)
        tokenizer = tokenizer_for(config)
        loaded = {split: build_token_data(select(parts, split), data.seq_len, tokenizer=tokenizer)
                  if select(parts, split) else None
                  for split in wanted}
    if "train" in wanted and (loaded["train"] is None or loaded["train"].num_examples == 0):
        raise UserError(f"--data {data.data}: fewer than --seq_len {data.seq_len} + 1 training tokens")
    return loaded


def load_labeled_data(config, wanted):
    """Padded, labelled examples for classification, labelled with the ids of config.classes
    (which `labeled_classes` gives); the data's training classes must be those."""
    splits = load_labeled_splits(config.data)
    if "train" in wanted:
        classes = labeled_classes_of(config.data, splits)
        if classes != config.classes:
            raise UserError(f"--data {config.data.data}: classes {classes} differ from the run's {config.classes}")
    # Held-out examples are labelled with the run's classes; a label the run never saw is left out.
    class_ids = {name: i for i, name in enumerate(config.classes)}

    def token_data(split):
        texts, labels = (select({name: part[0] for name, part in splits.items()}, split),
                         select({name: part[1] for name, part in splits.items()}, split))
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


def jsonl_prompts(path):
    """The prompt of each record of a JSONL file ('prompt', or the 'messages' of a conversation; a
    record with neither has the empty prompt): what `choose_split_by` reads."""
    return [record.get("prompt", record.get("messages", "")) for _, record in jsonl_records(path)]


def load_preference_data(config):
    """PreferenceSet of --data (a preference JSONL file; see tfpref.data.preferences), with the
    records of --validation_data as its validation split when that is given."""
    data = config.data
    _check_preference_file(data.data, config.train.objective)
    if not data.validation_data:
        return load_preferences(data.data, data.split_by)
    _check_preference_file(data.validation_data, config.train.objective)
    train = load_preferences(data.data, data.split_by, role="train")
    validation = load_preferences(data.validation_data, data.split_by, role="validation")
    if validation.kind != train.kind:
        raise UserError(f"--validation_data {data.validation_data}: {validation.kind} records, but --data "
                        f"{data.data} holds {train.kind} records (both files must be of one format)")
    return dataclasses.replace(train, items=train.items + validation.items)


def refuse_frozen_chat_markers(config, conversational):
    """Raise UserError when `conversational` records would train a preset whose chat markers LoRA
    keeps frozen: the control tokens added to a preset's vocabulary all start as one embedding (the
    mean, tfpref.models.vocabulary), so with adapters alone the model could never tell a user's
    turn from its own. A run from --init_from is left to its source's training."""
    model = config.model
    if conversational and model.model == "keras_hub" and model.lora_rank and not config.train.init_from:
        raise UserError(f"--data {config.data.data}: conversational records need the chat markers added to the "
                        f"preset's vocabulary trained, which --lora_rank freezes; leave --lora_rank out")


def preference_split_arrays(config, data, wanted, pairs_only=False):
    """{split: ArrayData or None} of a PreferenceSet's `wanted` splits ('all': every record)."""
    refuse_frozen_chat_markers(config, any(is_conversation(item.prompt) for item in data.items))
    loaded = {}
    align = config.align
    pairing = dict(pairs_per_item=align.pairs_per_item, min_gap=align.min_rating_gap)
    tokenizer = tokenizer_for(config)
    for split in wanted:
        part = data.split(split)
        if not part.items or (pairs_only and not part.comparisons(**pairing)):
            loaded[split] = None
            continue
        arrays = preference_arrays(part, config.data.seq_len, pairs_only, **pairing, tokenizer=tokenizer)
        if "weight" in arrays:  # raters or impressions, as weights of mean 1
            arrays["weight"] = arrays["weight"] / np.float32(arrays["weight"].mean())
        loaded[split] = ArrayData(arrays, config.data.seq_len)
    if "train" in wanted and loaded["train"] is None:
        raise UserError(_no_training_records(data, pairs_only))
    return loaded


def _no_training_records(data, pairs_only):
    """Why a preference file gave no training records, in the data's terms, and what to do."""
    train = data.split("train")
    if not train.items:
        held_out = len(data.items)
        return (f"--data {data.source}: all {held_out} records are held out (split by {data.split_by}); give "
                f"the records a 'split' field, --split_by record, or a separate --validation_data file")
    if data.kind in ("rating", "clicks"):
        return (f"--data {data.source}: no two training records of one prompt have different "
                f"{'ratings' if data.kind == 'rating' else 'click-through rates'} (more than --min_rating_gap "
                f"apart), so no pairs; train with --reward_loss {'regression' if data.kind == 'rating' else 'bce'}")
    return f"--data {data.source}: no training {'comparisons' if pairs_only else 'records'}"


__all__ = ["load_text_data", "labeled_classes", "load_labeled_data", "preference_kind", "jsonl_prompts",
           "load_preference_data", "preference_split_arrays", "refuse_frozen_chat_markers"]
