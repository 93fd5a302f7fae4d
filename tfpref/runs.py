"""The run directory: its config.json, its checkpoints, and the run it was initialised from.

A run directory is self-describing: `<model_dir>/config.json` holds the complete, resolved config
(what `--init_from` and the data decided included), and `<model_dir>/checkpoints/` the weights.
`resolve_config` turns the config a user asked for into that resolved, validated config; nothing
changes it afterwards. `load_run` gives back a trained task model from a run directory.

Example:
    >>> config, model, checkpoint = load_run("logs/transformer-mle")
"""
import copy
import json
import os

import tensorflow as tf

from tfpref.config import (DEFAULT_REWARD_LOSS, POLICY_OBJECTIVES, REWARD_LOSS_KINDS, SFT_OBJECTIVES, RunConfig,
                           incompatible_fields)
from tfpref.data.loading import jsonl_prompts, labeled_classes, preference_kind
from tfpref.data.splits import choose_split_by
from tfpref.errors import UserError
from tfpref.models import build_task_model
from tfpref.models.keras_hub import is_lora_weight, preset_limits

CONFIG_FILE = "config.json"
# Objectives whose JSONL data has prompts, split by prompt or by record (tfpref.data.splits).
PROMPTED_OBJECTIVES = ("reward_model",) + POLICY_OBJECTIVES + SFT_OBJECTIVES
CHECKPOINT_DIR = "checkpoints"


def config_path(model_dir):
    return os.path.join(model_dir, CONFIG_FILE)


def checkpoint_dir(model_dir):
    return os.path.join(model_dir, CHECKPOINT_DIR)


# ---- checkpoints' weights -------------------------------------------------------------------

def weights_by_path(*layers):
    """{path: variable} of every weight of `layers`; the checkpoint key of each weight.

    Keys are Keras variable paths rather than TensorFlow's object graph: Keras 3 keeps sub-layers
    held in Python lists (the transformer's blocks) out of that graph, so
    `tf.train.Checkpoint(model=model)` would silently skip them.
    """
    return {v.path: v for layer in layers for v in layer.weights}


def restore_weights(layers, run_dir, flag="--init_from"):
    """Load `layers`' weights from the latest checkpoint of `run_dir`; returns the checkpoint path."""
    path = tf.train.latest_checkpoint(checkpoint_dir(run_dir))
    if path is None:
        raise UserError(f"{flag} {run_dir}: no checkpoint found")
    weights = weights_by_path(*layers)
    if not load_config(run_dir, flag).model.lora_rank:
        # A run without LoRA adapters (a preset fine-tuned in full): a --lora_rank run starts its new
        # adapters as initialised (b = 0, the source's model exactly).
        weights = {key: v for key, v in weights.items() if not is_lora_weight(v)}
    status = tf.train.Checkpoint(weights=weights).restore(path)
    status.assert_existing_objects_matched()  # every weight of the model was in the checkpoint
    status.expect_partial()  # the optimizer and the rest are not wanted
    return path


def checkpoint_step(path):
    """The step number of a checkpoint path (`.../ckpt-1500` -> 1500)."""
    return int(path.rsplit("-", 1)[-1])


# ---- the config of a run --------------------------------------------------------------------

def load_config(model_dir, flag="--model_dir"):
    """The stored RunConfig of a run directory, with `model_dir` set to where it is now."""
    if not os.path.exists(config_path(model_dir)):
        raise UserError(f"{flag} {model_dir}: not a run directory (no config.json)")
    config = RunConfig.load(config_path(model_dir))
    config.model_dir = model_dir
    return config


def adopt_init_from(config):
    """--init_from: the run uses the source run's model architecture, its tokenizer and vocabulary
    included (copied into the run directory with the config, `save_run_tokenizer`). Dropout is not part of it (no
    weight depends on it): the run's own --dropout applies, and so does --lora_rank on a run without
    adapters. Changes `config` in place."""
    if not config.train.init_from:
        return
    dropout, lora_rank = config.model.dropout, config.model.lora_rank
    config.model = load_config(config.train.init_from, "--init_from").model
    config.model.dropout = dropout
    if lora_rank and config.model.model != "keras_hub":
        raise UserError(f"--lora_rank: the --init_from run {config.train.init_from} is a {config.model.model} "
                        f"model; LoRA adapters go on keras-hub presets only")
    if lora_rank and config.model.lora_rank and lora_rank != config.model.lora_rank:
        raise UserError(f"--lora_rank {lora_rank}: the --init_from run {config.train.init_from} trained rank-"
                        f"{config.model.lora_rank} adapters, which this run continues (leave --lora_rank out)")
    # A preset fine-tuned in full can be aligned with new adapters on it: the run's own --lora_rank.
    config.model.lora_rank = config.model.lora_rank or lora_rank


def resolve_config(config):
    """A validated copy of `config` with everything the run depends on decided: the --init_from
    architecture, a classifier's classes, --reward_loss auto and --split_by auto (read from the data).

    The checks that read the disk (--init_from, --reward_model, the data's format) happen here; the
    rest is `RunConfig.validate`, which runs last, on the config that will be trained.
    """
    config = copy.deepcopy(config)
    adopt_init_from(config)
    objective, data = config.train.objective, config.data
    if objective == "classify":
        classes = labeled_classes(data)
        if config.classes and config.classes != classes:
            raise UserError(f"--data {data.data}: classes {classes} differ from the run's {config.classes}")
        config.classes = classes
    if objective == "reward_model":
        kind = preference_kind(data.data)
        if config.align.reward_loss == "auto":
            config.align.reward_loss = DEFAULT_REWARD_LOSS[kind]
        if kind not in REWARD_LOSS_KINDS[config.align.reward_loss]:
            raise UserError(f"--reward_loss {config.align.reward_loss} does not fit {kind} data in {data.data} "
                            f"(use {DEFAULT_REWARD_LOSS[kind]} or bradley_terry)")
    if config.align.reward_model and objective != "reward_model":
        check_reward_model_dir(config.align.reward_model)
    if config.model.model == "keras_hub":
        check_preset(config.model.preset, data.seq_len)
    if data.split_by == "auto" and objective in PROMPTED_OBJECTIVES and data.data.endswith(".jsonl"):
        data.split_by, why = choose_split_by(jsonl_prompts(data.data))
        if not data.validation_data:
            print(f"Held-out records of {data.data}: by {data.split_by} ({why})", flush=True)
    return config.validate()


def check_preset(preset, seq_len):
    """Raise UserError unless `preset` is a keras-hub preset the adapter supports, long enough for `seq_len`."""
    try:
        class_name, max_length = preset_limits(preset)
    except ValueError as e:
        raise UserError(f"--preset {preset}: {e}") from None
    if seq_len > max_length:
        raise UserError(f"--seq_len {seq_len} is above the {class_name} preset's maximum of {max_length} positions")


def check_reward_model_dir(model_dir):
    """Raise UserError unless `model_dir` is a trained --objective=reward_model run."""
    if not os.path.exists(config_path(model_dir)):
        raise UserError(f"--reward_model {model_dir}: not a run directory (no config.json)")
    with open(config_path(model_dir), encoding="utf-8") as f:
        objective = json.load(f).get("train", {}).get("objective")
    if objective != "reward_model":
        raise UserError(f"--reward_model {model_dir}: a {objective} run, not a reward_model run")
    if not os.path.isdir(checkpoint_dir(model_dir)):
        raise UserError(f"--reward_model {model_dir}: no checkpoint yet")


def check_run_dir(config):
    """True when `config.model_dir` holds this run already (resume), False when it is new; refuses a
    directory whose stored config describes a different run."""
    path = config_path(config.model_dir)
    if not os.path.exists(path):
        if os.path.isdir(checkpoint_dir(config.model_dir)):
            raise UserError(f"--model_dir {config.model_dir} has checkpoints but no config.json; "
                            f"refusing to guess what they are")
        return False
    changed = incompatible_fields(RunConfig.load(path), config)
    if changed:
        raise UserError(f"--model_dir {config.model_dir} holds a different run (changed: "
                        f"{', '.join(changed)}); use a new --model_dir or the original flags")
    return True


def write_config(config):
    os.makedirs(config.model_dir, exist_ok=True)
    with open(config_path(config.model_dir), "w", encoding="utf-8") as f:
        f.write(config.to_json())


# ---- a run's model and data ---------------------------------------------------------------------

def load_run(model_dir, flag="--model_dir"):
    """(config, task model, checkpoint path) of a run directory, weights of its latest checkpoint restored."""
    config = load_config(model_dir, flag)
    model = build_task_model(config)
    checkpoint = restore_weights(model.parts, model_dir, flag=flag)
    return config, model, checkpoint


def load_token_data(config, objective_cls, wanted=("train", "validation"), show_progress=True):
    """{split: data or None} for the `wanted` splits, in the form `objective_cls` trains on."""
    return objective_cls.load_data(config, wanted, show_progress)
