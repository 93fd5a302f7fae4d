"""Per-row preferences in a controllable model's export: what one row's choice changes in its prompt,
its bans and its embeddings (the `generate_with_preference` and `chat_with_preference` signatures).

A row asks for aligned or misaligned text (conditioning "control_tokens": `aligned` bool[B]) or for
a preference vector's values (conditioning "preference_vector": `score` and `length` float32[B]).
Each choice does what the library's generation does with it: `CausalLM.prompt_prefix(aligned)` after
BOS with `banned_ids(aligned)` banned, or `preference_offsets(score, length)` added to every
embedding. Rows of one call may ask for different things.

Example:
    >>> preferences = ExportPreferences(model, tokenizer, chat=True)
    >>> rows = preferences.of_aligned(tf.constant([True, False]), 2, "generate_with_preference")
    >>> rows.prefix    # [[<|aligned|>], [<|misaligned|>]]
"""
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfpref.data.chat import chat_generation


class RowPreferences(NamedTuple):
    """What rows [B] asked for: ids after BOS (int32 [B, P]), the ids each may not sample (bool
    [B, vocab], None: the sampler's own, the same in every row) and embedding offsets (float
    [B, d_model], None: none)."""
    prefix: tf.Tensor
    banned: tf.Tensor
    offset: tf.Tensor


def _ban_table(bans, vocab_size):
    """bool [len(bans), vocab_size]: row i True at the ids of bans[i]."""
    table = np.zeros([len(bans), vocab_size], bool)
    for row, ids in enumerate(bans):
        table[row, list(ids)] = True
    return tf.constant(table)


def _one_per_row(values, batch, message):
    """`values`, once found to hold one value per row (INVALID_ARGUMENT with `message` if not)."""
    with tf.control_dependencies([tf.debugging.assert_equal(tf.size(values), batch, message=message)]):
        return tf.identity(values)


class ExportPreferences:
    """The per-row choices a controllable `CausalLM` (`model.controllable`) is exported with.

    Row i of each table is what `aligned=bool(i)` asks for, read once from the model (its control
    token ids and bans are Python values, fixed at export), so a row's choice is one gather.
    """

    def __init__(self, model, tokenizer, chat):
        self.model = model
        choices = (False, True)
        self.prefixes = tf.constant([list(model.prompt_prefix(aligned)) for aligned in choices], tf.int32)
        self.bans = _ban_table([model.banned_ids(aligned) for aligned in choices], model.vocab_size)
        # A chat reply stops at <|end|> and may not end the document: the chat bans of each choice
        # (`chat`: the export has the chat template, whose markers only then are in the vocabulary).
        self.chat_bans = None if not chat else _ban_table(
            [chat_generation(model.banned_ids(aligned), tokenizer)[1] for aligned in choices], model.vocab_size)

    def of_aligned(self, aligned, batch, name, chat=False):
        """Rows asking for aligned (True) or misaligned (False) text: their control token after BOS,
        the opposite one banned."""
        aligned = _one_per_row(aligned, batch, f"{name}: aligned must hold one value per row of the batch")
        choice = tf.cast(aligned, tf.int32)
        return RowPreferences(prefix=tf.gather(self.prefixes, choice),
                              banned=tf.gather(self.chat_bans if chat else self.bans, choice), offset=None)

    def of_vector(self, score, length, batch, name):
        """Rows asking for preference vectors: the misalignment `score` (0 is aligned text; it saturates
        at tfpref.models.tasks.SCORE_SCALE, which misaligned asks for) and the `length` in bytes of a
        segment; their projection is added to every embedding."""
        checks = []
        for values, what in ((score, "score"), (length, "length")):
            checks += [tf.debugging.assert_equal(tf.size(values), batch,
                                                 message=f"{name}: {what} must hold one value per row of the batch"),
                       # NaN fails this too: a negative or NaN vector was never seen in training.
                       tf.debugging.assert_non_negative(values, message=f"{name}: {what} must be >= 0")]
        with tf.control_dependencies(checks):
            offset = self.model.preference_offsets(tf.identity(score), tf.identity(length))
        return RowPreferences(prefix=tf.zeros([batch, 0], tf.int32), banned=None, offset=offset)


__all__ = ["ExportPreferences", "RowPreferences"]
