"""Shape buckets for the exported signatures: pad a request up to a few fixed shapes.

XLA compiles one program per input shape. A server sees every batch size and text length, so
compiling each exact shape would make most requests pay a compilation. Rounding the batch, the
token width and the number of new tokens up to a power of two (with a floor, and capped at the
model's positions) bounds the programs to a few dozen per signature, each compiled on first use
and then reused for the life of the process. The padding is masked, so it changes no result: padded
rows are dropped and padded columns are masked keys or sliced off.

Example:
    >>> width = bucket(tf.constant(37), minimum=16, maximum=2048)   # -> 64
"""
import tensorflow as tf

# The smallest token-width bucket: shorter widths cost next to nothing more at 16.
MIN_WIDTH = 16
# Powers of two up to 2^20; a bucket never exceeds the model's positions or the value itself.
_POWERS = [2 ** i for i in range(21)]


def bucket(n, minimum=1, maximum=None):
    """The smallest power of two >= max(n, minimum), capped at `maximum` (but never below n)."""
    n = tf.convert_to_tensor(n, tf.int32)
    wanted = tf.maximum(n, minimum)
    powers = tf.constant(_POWERS, tf.int32)
    size = tf.reduce_min(tf.where(powers >= wanted, powers, tf.int32.max))
    if maximum is not None:
        size = tf.maximum(tf.minimum(size, maximum), n)
    return size


def pad_rows(tensor, rows):
    """`tensor` [batch, ...] with copies of its first row appended up to `rows` rows (a copy is a
    valid input where a zero row may not be, e.g. a prompt needs one real token)."""
    extra = rows - tf.shape(tensor)[0]
    ones = tf.ones([tf.rank(tensor) - 1], tf.int32)
    return tf.concat([tensor, tf.tile(tensor[:1], tf.concat([[extra], ones], axis=0))], axis=0)


def pad_columns(tensor, width, value, left=False):
    """`tensor` [batch, time] padded with `value` to `width` columns, on the right (or left)."""
    extra = width - tf.shape(tensor)[1]
    paddings = [[0, 0], [extra, 0]] if left else [[0, 0], [0, extra]]
    return tf.pad(tensor, paddings, constant_values=value)


__all__ = ["bucket", "pad_rows", "pad_columns", "MIN_WIDTH"]
