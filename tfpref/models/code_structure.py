"""Line-structure embeddings of source code, computed from byte ids inside the graph.

A byte-level model sees indentation as a run of space bytes: how wide a line's indent is, and how
it compares with the indent of the line before, must be counted by attention, which a small model
learns slowly from a few thousand labelled texts (code tokenizers have tokens for runs of spaces,
and Python's own tokenizer emits INDENT and DEDENT, for the same reason). This layer gives every
byte four learned embeddings, summed:

  * its line's indent width (0-31 spaces), separately for whitespace-only lines;
  * the change of that indent from the previous non-blank line (-16..16), and whether that line
    ended with ':' (opened a block);
  * the bracket depth at the byte (0-7; brackets in strings are counted too);
  * where Python's tokenizer gives up: at and after a dedent to a width no enclosing block has,
    and in a statement whose bracket is never closed (pycodestyle, for one, checks neither).

The embeddings start at zero, so a pretrained backbone's states are unchanged until training
moves them. The features are functions of the whole text (a byte sees its line's indent before
the indent is complete): meant for reward models, which read whole texts, not for generation.
"""
import keras
import tensorflow as tf

from tfpref.data.tokenizer import NUM_SPECIAL

MAX_INDENT = 31
MAX_DELTA = 16
MAX_DEPTH = 7
_INDENT_IDS = 2 * (MAX_INDENT + 1)        # indent width x whitespace-only line
_DELTA_IDS = 2 * (2 * MAX_DELTA + 1)      # indent change x previous line opened a block
_DEPTH_IDS = MAX_DEPTH + 1
_STOP_IDS = 4                             # after a bad dedent x in a statement never closed
NUM_STRUCTURE_IDS = _INDENT_IDS + _DELTA_IDS + _DEPTH_IDS + _STOP_IDS + 1  # + one id for special tokens
_NONE_ID = NUM_STRUCTURE_IDS - 1


def _byte(character):
    return ord(character) + NUM_SPECIAL


def code_structure_ids(token_ids):
    """[batch, time, 4] int32 ids (indent, indent change, bracket depth, tokenizer stop) of `token_ids`
    [batch, time]; special tokens (BOS, padding, control tokens) get the reserved id and count as
    neither space nor text."""
    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    batch, time = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    real = token_ids >= NUM_SPECIAL
    newline = tf.equal(token_ids, _byte("\n"))
    space = tf.equal(token_ids, _byte(" "))
    text = real & ~newline & ~space & ~tf.equal(token_ids, _byte("\r"))
    text_int = tf.cast(text, tf.int32)

    # Line index of each byte (a newline belongs to the line it ends); every (row, line) pair is
    # one segment of the flattened batch, so per-line sums are segment sums.
    line = tf.cumsum(tf.cast(newline, tf.int32), axis=1, exclusive=True)
    rows = tf.range(batch)[:, None] * time
    segment = tf.reshape(line + rows, [-1])
    num_segments = batch * time

    def per_line(values, reduce=tf.math.unsorted_segment_sum):
        return tf.reshape(reduce(tf.reshape(values, [-1]), segment, num_segments), [batch, time])

    def at_line(per_line_values):  # back from lines to the bytes on them
        return tf.gather(per_line_values, line, batch_dims=1)

    # A space is leading indent while no text byte came before it on its line.
    text_before = tf.cumsum(text_int, axis=1, exclusive=True)
    text_before_line = at_line(per_line(text_before, tf.math.unsorted_segment_min))
    leading = space & tf.equal(text_before - text_before_line, 0)
    indent = per_line(tf.cast(leading, tf.int32))
    has_text = per_line(text_int) > 0
    # A line opens a block when its last text byte is ':' (found by position, then looked up).
    position = tf.broadcast_to(tf.range(time)[None, :], [batch, time])
    last_text = per_line(tf.where(text, position, -1), tf.math.unsorted_segment_max)
    last_byte = tf.gather(token_ids, tf.maximum(last_text, 0), batch_dims=1)
    opens_block = has_text & tf.equal(last_byte, _byte(":"))

    # The previous non-blank line of each line: non-blank lines numbered in order (rank), their
    # indent and ':' looked up by rank - 1.
    def previous(values, selected=has_text):
        """Per line: `values` of the closest earlier `selected` line (0 for none)."""
        rank = tf.cumsum(tf.cast(selected, tf.int32), axis=1, exclusive=True)
        by_rank = tf.reshape(tf.where(selected, rank + rows, num_segments), [-1])
        table = tf.math.unsorted_segment_sum(tf.reshape(values, [-1]), by_rank, num_segments + 1)
        table = tf.reshape(table[:num_segments], [batch, time])
        return tf.where(rank > 0, tf.gather(table, tf.maximum(rank - 1, 0), batch_dims=1), 0)

    previous_indent = previous(indent)
    previous_opens = previous(tf.cast(opens_block, tf.int32))

    indent_id = tf.minimum(indent, MAX_INDENT) + (MAX_INDENT + 1) * tf.cast(~has_text, tf.int32)
    delta = tf.clip_by_value(indent - previous_indent, -MAX_DELTA, MAX_DELTA) + MAX_DELTA
    delta_id = _INDENT_IDS + delta + (2 * MAX_DELTA + 1) * previous_opens
    opening = tf.cast(tf.reduce_any(tf.equal(token_ids[..., None], [_byte(c) for c in "([{"]), -1), tf.int32)
    closing = tf.cast(tf.reduce_any(tf.equal(token_ids[..., None], [_byte(c) for c in ")]}"]), -1), tf.int32)
    # Python's tokenizer counts brackets without a floor: a stray closer makes the depth negative,
    # and only depth 0 is outside brackets.
    bracket_step = opening - closing
    raw_depth = tf.cumsum(bracket_step, axis=1)
    depth_id = _INDENT_IDS + _DELTA_IDS + tf.clip_by_value(raw_depth, 0, MAX_DEPTH)

    # Where Python's tokenizer (which pycodestyle and any Python tool runs first) gives up:
    # 1. a bracket never closed: from its byte on the depth never returns to 0; the statement it is
    #    in never ends (its whole first line is marked);
    later = tf.range(time)[None, :] >= tf.range(time)[:, None]  # [t, s]: s >= t
    never_zero = tf.reduce_min(tf.where(later[None], tf.abs(raw_depth)[:, None, :], 1), axis=2) > 0
    unclosed = per_line(tf.cast(never_zero, tf.int32), tf.math.unsorted_segment_max) > 0
    # 2. a dedent to a width no enclosing block has, at a statement's first line (not a comment,
    #    not inside brackets): the nearest earlier statement no wider than it must be exactly as
    #    wide (or, with none, the line must be at 0). That line and all after it go unread.
    first_text = per_line(tf.where(text, position, time), tf.math.unsorted_segment_min)
    first_byte = tf.gather(token_ids, tf.minimum(first_text, time - 1), batch_dims=1)
    start_depth = tf.gather(raw_depth - bracket_step, tf.minimum(first_text, time - 1), batch_dims=1)
    statement = has_text & tf.equal(start_depth, 0) & ~tf.equal(first_byte, _byte("#"))
    lines = tf.range(time)
    narrower = (statement[:, None, :] & (lines[None, None, :] < lines[None, :, None])
                & (indent[:, None, :] <= indent[:, :, None]))  # [batch, line, earlier line]
    nearest = tf.reduce_max(tf.where(narrower, lines[None, None, :], -1), axis=2)
    matched = tf.where(nearest >= 0, tf.equal(tf.gather(indent, tf.maximum(nearest, 0), batch_dims=1), indent),
                       tf.equal(indent, 0))
    bad_dedent = statement & (indent < previous(indent, statement)) & ~matched
    stopped = tf.cumsum(tf.cast(bad_dedent, tf.int32), axis=1) > 0
    stop_id = _INDENT_IDS + _DELTA_IDS + _DEPTH_IDS + 2 * tf.cast(stopped, tf.int32) + tf.cast(unclosed, tf.int32)
    ids = tf.stack([at_line(indent_id), at_line(delta_id), depth_id, at_line(stop_id)], axis=-1)
    return tf.where(real[..., None], ids, _NONE_ID)


@keras.saving.register_keras_serializable(package="tfpref")
class CodeStructureEmbedding(keras.layers.Layer):
    """[batch, time, d_model] sum of the structure embeddings of each byte (see the module
    docstring); meant as a backbone's `embedding_offset`."""

    def __init__(self, d_model, **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.embedding = keras.layers.Embedding(NUM_STRUCTURE_IDS, d_model, embeddings_initializer="zeros",
                                                name="embedding")

    def build(self, input_shape=None):
        self.embedding.build((None, None))

    def call(self, token_ids):
        return tf.reduce_sum(self.embedding(code_structure_ids(token_ids)), axis=-2)

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model}
