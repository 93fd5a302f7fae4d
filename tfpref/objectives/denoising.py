"""Denoising (autoencoding) pretraining for a decoder-only model, BART-style.

Each example's first half is corrupted and the model learns to reproduce the original after it:

    corrupted source  <|reconstruct|>  original source  PAD...
    '----- context, no loss -------'   '- loss here --'

Corruptions, each on random spans of about `span_length` tokens covering about `rate` of the text:
  * mask: each span collapses into one `<|mask|>` token (text infilling: the model must also
    guess how long the span was);
  * delete: span tokens are dropped;
  * shuffle: tokens within each span are put in random order.
Everything keeps static shapes (removed tokens are compacted with a stable sort and the tail is
padded), so the objective compiles with XLA. Randomness is stateless, seeded per example from the
pipeline's `sample_index`, so a resumed or multi-replica run corrupts exactly the same way.
"""
import tensorflow as tf

from tfpref.data.tokenizer import CONTROL_TOKENS, PAD_ID
from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import Objective, ObjectiveOutput

MASK_ID = CONTROL_TOKENS["<|mask|>"]
RECONSTRUCT_ID = CONTROL_TOKENS["<|reconstruct|>"]
_SALTS = {"mask": 1, "delete": 2, "shuffle": 3}


def span_cover(uniform, rate, span_length):
    """Bool [batch, n]: positions inside spans; a span starts at a position with prob rate/span_length.

    Returns (covered, span_start) where span_start is, for each position, the index of the most
    recent span start (or -1).
    """
    n = tf.shape(uniform)[1]
    starts = uniform < rate / span_length
    index = tf.range(n)[None, :]
    span_start = tf.scan(tf.maximum, tf.transpose(tf.where(starts, index, -1)))  # cumulative max
    span_start = tf.transpose(span_start)
    covered = tf.logical_and(span_start >= 0, index - span_start < span_length)
    return covered, span_start


def compact(token_ids, keep):
    """Move kept tokens to the front in their order; the freed tail becomes PAD."""
    n = tf.shape(token_ids)[1]
    order = tf.argsort(tf.where(keep, 0, 1) * n + tf.range(n)[None, :], axis=1, stable=True)
    kept = tf.gather(token_ids, order, batch_dims=1)
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1, keepdims=True)
    return tf.where(tf.range(n)[None, :] < count, kept, PAD_ID)


def row_uniform(sample_index, salt, width):
    """[batch, width] uniforms, each row seeded by its sample index alone."""
    return tf.map_fn(lambda i: tf.random.stateless_uniform([width], tf.stack([i, tf.cast(salt, tf.int64)])),
                     tf.cast(sample_index, tf.int64), fn_output_signature=tf.float32)


def corrupt(source, sample_index, mask_rate, delete_rate, shuffle_rate, span_length):
    """Corrupted copy of `source` [batch, n] (PAD-free); same shape, PAD-padded at the end."""
    width = source.shape[1] if source.shape[1] is not None else tf.shape(source)[1]  # static keeps XLA happy
    index = tf.range(width)[None, :]
    tokens = source
    if shuffle_rate > 0:
        covered, span_start = span_cover(row_uniform(sample_index, _SALTS["shuffle"], width),
                                         shuffle_rate, span_length)
        # Sort keys: a token outside spans keeps its index; a token inside the span starting at s
        # gets s + u with u in (0, 1), so span tokens stay in place as a group, in random order.
        jitter = row_uniform(sample_index, _SALTS["shuffle"] + 10, width)
        keys = tf.where(covered, tf.cast(span_start, tf.float32) + 0.5 * jitter + 0.25, tf.cast(index, tf.float32))
        tokens = tf.gather(tokens, tf.argsort(keys, axis=1, stable=True), batch_dims=1)
    keep = tf.ones_like(tokens, tf.bool)
    if mask_rate > 0:
        covered, span_start = span_cover(row_uniform(sample_index, _SALTS["mask"], width), mask_rate, span_length)
        first_of_span = tf.logical_and(covered, tf.logical_or(index == span_start,
                                                              tf.logical_not(tf.roll(covered, 1, axis=1))))
        tokens = tf.where(first_of_span, MASK_ID, tokens)
        keep = tf.logical_and(keep, tf.logical_or(tf.logical_not(covered), first_of_span))
    if delete_rate > 0:
        covered, _ = span_cover(row_uniform(sample_index, _SALTS["delete"], width), delete_rate, span_length)
        keep = tf.logical_and(keep, tf.logical_not(covered))
    return compact(tokens, keep)


class DenoisingObjective(Objective):
    """Reconstruct the original source after its corrupted copy; loss on the original only.

    loss_i = sum over the original's tokens of -log p(token | corrupted, <|reconstruct|>, prefix),
    divided by the source length.
    """

    name = "denoising"

    def __init__(self, config):
        super().__init__(config)
        self.rates = config.train

    def make_inputs(self, batch):
        """(token_ids, padding_mask, loss_mask) of the corrupted-then-original sequences."""
        token_ids = batch["token_ids"]
        length = token_ids.shape[1]
        source_len = (length - 1) // 2
        source = token_ids[:, :source_len]
        source_mask = batch["padding_mask"][:, :source_len]
        source = tf.where(source_mask, source, PAD_ID)
        corrupted = corrupt(source, batch["sample_index"], self.rates.mask_rate, self.rates.delete_rate,
                            self.rates.shuffle_rate, self.rates.span_length)
        batch_size = tf.shape(token_ids)[0]
        separator = tf.fill([batch_size, 1], RECONSTRUCT_ID)
        tail = length - 2 * source_len - 1
        sequence = tf.concat([corrupted, separator, source, tf.fill([batch_size, tail], PAD_ID)], axis=1)
        sequence = tf.ensure_shape(sequence, token_ids.shape)
        real = tf.not_equal(sequence, PAD_ID)
        in_original = tf.range(length)[None, :] > source_len
        return sequence, real, tf.logical_and(real, in_original)

    def compute(self, batch, model, training):
        sequence, padding_mask, loss_mask = self.make_inputs(batch)
        logprobs = sequence_logprobs(model, sequence, padding_mask, training=training)
        weights = tf.cast(loss_mask[:, 1:], tf.float32)
        nll = -tf.reduce_sum(logprobs * weights, axis=1)
        source_len = float((batch["token_ids"].shape[1] - 1) // 2)
        return ObjectiveOutput(losses=nll / source_len,
                               metrics={"reconstruction_nll": (tf.reduce_sum(nll), tf.reduce_sum(weights))})
