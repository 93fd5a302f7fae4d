"""Maximum likelihood: next-token cross-entropy, and the language-model metrics every
text objective reports."""
import functools
import math

import tensorflow as tf

from tfpref.data.tokenizers import KERAS_HUB_MODEL, control_ids_for, tokenizer_for, tokens_are_bytes
from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import Objective, ObjectiveOutput


def text_targets(batch, control_ids):
    """Bool [batch, T-1]: targets that are real text (not padding, not one of `control_ids`, the run's
    vocabulary's: one contiguous block in every tfpref vocabulary, so two comparisons find them)."""
    targets = batch["token_ids"][:, 1:]
    if not control_ids:
        return batch["padding_mask"][:, 1:]
    is_control = tf.logical_and(targets >= control_ids[0], targets <= control_ids[-1])
    return tf.logical_and(batch["padding_mask"][:, 1:], tf.logical_not(is_control))


def aligned_targets(batch, threshold, control_ids):
    """Bool [batch, T-1]: text targets whose segment scores at most `threshold`."""
    return tf.logical_and(text_targets(batch, control_ids), batch["token_scores"][:, 1:] <= threshold)


def lm_metrics(logprobs, batch, threshold, control_ids, byte_lengths=None):
    """{"nll": ...} over text targets and, on scored data, {"nll_aligned": ...} over aligned ones.

    Control tokens are inputs, not text: leaving them out keeps the loss comparable between
    conditional training and the rest. With `byte_lengths` (int [vocab]: bytes of text each id
    stands for) also {"nll_per_byte": (nll sum, bytes of the targets)}, whatever the tokenizer's
    pieces, and {"bytes_per_token": ...} of the data.
    """
    def sums(mask):
        mask = tf.cast(mask, tf.float32)
        return -tf.reduce_sum(logprobs * mask), tf.reduce_sum(mask)

    text = text_targets(batch, control_ids)
    metrics = {"nll": sums(text)}
    if byte_lengths is not None:
        lengths = tf.gather(tf.constant(byte_lengths, tf.float32), batch["token_ids"][:, 1:])
        text_bytes = tf.reduce_sum(lengths * tf.cast(text, tf.float32))
        metrics["nll_per_byte"] = (metrics["nll"][0], text_bytes)
        metrics["bytes_per_token"] = (text_bytes, metrics["nll"][1])
    if threshold is not None and "token_scores" in batch:
        aligned = aligned_targets(batch, threshold, control_ids)
        metrics["nll_aligned"] = sums(aligned)
        metrics["aligned_fraction"] = (tf.reduce_sum(tf.cast(aligned, tf.float32)), metrics["nll"][1])
    return metrics


def per_example(token_losses, batch):
    """sum_t token_losses / (T - 1): per-example losses whose global-batch mean is a token mean."""
    length = tf.cast(tf.shape(batch["token_ids"])[1] - 1, tf.float32)
    return tf.reduce_sum(token_losses, axis=1) / length


class MleObjective(Objective):
    """loss_i = sum_t -log p(x_t | x_<t) / (T - 1) over the real tokens of example i.

    Dividing by the fixed length T - 1 (not by each row's own count) makes the global-batch mean
    equal the token-mean NLL for packed data and weights every token equally for padded data.
    """

    name = "mle"

    def compute(self, batch, model, training):
        logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training)
        return ObjectiveOutput(losses=per_example(-logprobs, batch),
                               metrics=lm_metrics(logprobs, batch, self.aligned_threshold, self.control_ids,
                                                  self.byte_lengths))

    @property
    def control_ids(self):
        """The control ids of the run's vocabulary: inputs, never text targets."""
        return control_ids_for(self.config.model)

    @functools.cached_property
    def byte_lengths(self):
        """Bytes of text each id of the run's vocabulary stands for, or None for a keras-hub preset
        (its metrics stay per token)."""
        if self.config.model.model == KERAS_HUB_MODEL:
            return None
        return tokenizer_for(self.config).byte_lengths()

    @property
    def aligned_threshold(self):
        # Used only when batches carry token scores (feedback runs, or evaluate.py --scorer).
        return self.config.feedback.threshold

    def summarize(self, means):
        if "nll" in means:
            means["perplexity"] = math.exp(min(means["nll"], 50.0))
            if "nll_per_byte" in means:  # exact, whatever the tokenizer's pieces
                means["bits_per_byte"] = means["nll_per_byte"] / math.log(2.0)
            else:
                unit = "byte" if tokens_are_bytes(self.config.model) else "token"  # a preset's tokens are not bytes
                means[f"bits_per_{unit}"] = means["nll"] / math.log(2.0)
        return means
