"""Randomly initialised keras-hub presets, for small experiments: `tfpref preset`.

A preset directory written here is an ordinary keras-hub preset (`save_to_preset`), so
`--model keras_hub --preset DIR` trains it like any downloaded one. Two sources of architecture:

- another preset (`source`): its backbone class and config, with `overrides` of any config field
  (`num_layers`, `hidden_dim`, ...), and its tokenizer, unchanged: a small model of a real
  family that reads the family's vocabulary (only the config is read, not the weights);
- none: a GPT-2 whose tokenizer is byte-level BPE over the 256 bytes, `<|endoftext|>` and one
  merge, which needs no vocabulary file at all, so it works offline.

Example:
    >>> random_preset("presets/tiny", source="gpt2_base_en", overrides={"num_layers": 2, "hidden_dim": 64})
    {'preset': 'presets/tiny', 'class_name': 'GPT2Backbone', 'parameters': ...}
"""
import os

import keras
import keras_hub
from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode
from keras_hub.src.utils.preset_utils import load_json

from tfpref.errors import UserError

# The byte-level GPT-2's sizes when no source preset gives them (overridable like any field).
BYTE_GPT2_CONFIG = {"num_layers": 4, "num_heads": 4, "hidden_dim": 128, "intermediate_dim": 512,
                    "max_sequence_length": 256, "dropout": 0.0}
END_OF_TEXT = "<|endoftext|>"


def byte_level_gpt2_tokenizer():
    """GPT-2's tokenizer over its 256-symbol byte alphabet: every text encodes, `<|endoftext|>`
    (id 0) starts and ends texts. One merge, two spaces, because keras-hub's BPE cannot build an
    empty merge table (and indentation is where it pays)."""
    _, alphabet = bytes_to_unicode()
    vocabulary = {END_OF_TEXT: 0, **{symbol: i + 1 for i, symbol in enumerate(alphabet)}}
    vocabulary["ĠĠ"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ Ġ"])


def causal_lm_class(backbone_class):
    """The keras-hub CausalLM task whose backbone is `backbone_class`."""
    pending, seen = [keras_hub.models.CausalLM], set()
    while pending:
        task = pending.pop()
        if task in seen:
            continue
        seen.add(task)
        if getattr(task, "backbone_cls", None) is backbone_class:
            return task
        pending.extend(task.__subclasses__())
    raise UserError(f"--source: keras-hub has no causal LM for a {backbone_class.__name__}")


def random_preset(output, source=None, overrides=None, seed=0):
    """Write a randomly initialised causal LM preset to `output` (which must not exist or be empty)
    and return a summary dict. See the module docstring for `source` and `overrides`."""
    overrides = dict(overrides or {})
    if os.path.isdir(output) and os.listdir(output) or os.path.isfile(output):
        raise UserError(f"--output {output} exists and is not empty; choose another directory")
    if source is None:
        backbone_class, tokenizer = keras_hub.models.GPT2Backbone, byte_level_gpt2_tokenizer()
        config = {**BYTE_GPT2_CONFIG, "vocabulary_size": tokenizer.vocabulary_size()}
    else:
        try:
            saved = load_json(source)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"--source {source}: not a keras-hub preset ({str(e).splitlines()[0]})") from None
        backbone_class = keras.saving.get_registered_object(saved.get("registered_name", ""))
        if backbone_class is None:
            raise UserError(f"--source {source}: unknown backbone {saved.get('class_name')!r}")
        config = dict(saved["config"])
        tokenizer = keras_hub.models.Tokenizer.from_preset(source)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise UserError(f"--set {unknown[0]}: not a field of the {backbone_class.__name__} config "
                        f"(fields: {', '.join(sorted(k for k in config if k not in ('name', 'dtype', 'trainable')))})")
    if "vocabulary_size" in overrides:
        raise UserError("--set vocabulary_size: the vocabulary is the tokenizer's")
    keras.utils.set_random_seed(seed)
    try:
        backbone = backbone_class.from_config({**config, **overrides})
    except (TypeError, ValueError) as e:
        raise UserError(f"--set: the {backbone_class.__name__} cannot be built so: {e}") from None
    task_class = causal_lm_class(backbone_class)
    task = task_class(backbone=backbone, preprocessor=task_class.preprocessor_cls(tokenizer=tokenizer))
    os.makedirs(output, exist_ok=True)
    task.save_to_preset(output)
    return {"preset": output, "class_name": backbone_class.__name__, "parameters": int(backbone.count_params()),
            "vocabulary_size": int(tokenizer.vocabulary_size()), "source": source, "seed": seed,
            "overrides": overrides}
