"""Adding tokens to a keras-hub backbone's vocabulary: a copy of it with a larger token embedding.

The backbone is rebuilt from its own config with `vocabulary_size` raised, and every weight is
copied over. The weights indexed by the vocabulary (the token embedding, and an untied output
projection or a logit bias where a backbone has them) grow along that one axis: their old rows
keep their values and the new rows are initialised to the mean of the old ones (Hewitt 2021,
"Initializing new word embeddings for pretrained language models"). With the mean, a new token's
logit is the average of the old tokens' logits, whatever the hidden state, so at step 0 the new
tokens neither take probability mass from the text (a random row could give one a large logit
and the model would start emitting it) nor change any old token's logit: the model's
distribution over its old vocabulary is what it was. As an input, the mean is the most neutral
embedding the model has seen.

Example:
    >>> grown = with_added_tokens(keras_hub.models.Backbone.from_preset(preset), 8)
    >>> grown.vocabulary_size                    # the preset's V + 8; ids V..V+7 are the new tokens
"""
import numpy as np


def with_added_tokens(hub_backbone, count):
    """A keras-hub backbone like `hub_backbone` (same class, config and weights) whose vocabulary
    has `count` more ids after its last, their rows initialised to the mean of the old ones."""
    config = hub_backbone.get_config()
    config["vocabulary_size"] = int(config["vocabulary_size"]) + count
    grown = type(hub_backbone).from_config(config)
    copy_weights(hub_backbone.weights, grown.weights, count)
    return grown


def copy_weights(source, target, count):
    """Assign each weight of `source` to the same-named weight of `target`; a target weight larger by
    `count` along one axis (indexed by the vocabulary) gets the source's values and `count` mean rows."""
    if [w.path for w in source] != [w.path for w in target]:
        raise ValueError("the backbone rebuilt with a larger vocabulary has other weights than the original")
    for old, new in zip(source, target):
        value = np.asarray(old.numpy())
        if tuple(value.shape) != tuple(new.shape):
            value = grown_value(value, tuple(new.shape), count, old.path)
        new.assign(value)


def grown_value(value, shape, count, name="weight"):
    """`value` extended to `shape` along the one axis where they differ (by `count`), with the mean of
    `value` along that axis as every new slice."""
    axes = [axis for axis, (old, new) in enumerate(zip(value.shape, shape)) if old != new]
    if len(value.shape) != len(shape) or len(axes) != 1 or shape[axes[0]] - value.shape[axes[0]] != count:
        raise ValueError(f"{name}: cannot grow a {value.shape} weight to {shape} by {count} vocabulary ids")
    axis = axes[0]
    # The mean in float64, so a large vocabulary's sum loses no precision; stored in the weight's dtype.
    mean = value.astype(np.float64).mean(axis=axis, keepdims=True).astype(value.dtype)
    return np.concatenate([value, np.repeat(mean, count, axis=axis)], axis=axis)
