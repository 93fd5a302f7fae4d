"""Building blocks shared by the language models.

Attention is written with one fused query/key/value projection and two einsums instead of
`keras.layers.MultiHeadAttention`: fewer, larger matmuls are what makes a small model fast on CPU,
and under XLA the mask, softmax and dropout fuse into the surrounding ops.
"""
import math

import keras
import tensorflow as tf
from tensorflow.compiler.tf2xla.python.xla import dynamic_update_slice

_NEG_INF = -1e9
# Below this length splitting the causal attention costs more in extra ops than it saves.
_SPLIT_MIN_LENGTH = 128


def init_normal(stddev=0.02):
    return keras.initializers.RandomNormal(stddev=stddev)


def attention_mask(query_len, padding_mask=None, key_len=None, query_offset=0):
    """Boolean [batch or 1, 1, query_len, key_len]: key j visible to query i (causal, not padding)."""
    key_len = query_len if key_len is None else key_len
    query_pos = tf.range(query_len)[:, None] + query_offset
    visible = tf.range(key_len)[None, :] <= query_pos
    visible = visible[None, None, :, :]
    if padding_mask is not None:
        visible = tf.logical_and(visible, tf.cast(padding_mask, tf.bool)[:, None, None, :])
    return visible


@keras.saving.register_keras_serializable(package="tfpref")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention over [batch, time, d_model] inputs."""

    def __init__(self, d_model, num_heads, dropout=0.0, output_init_stddev=0.02, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
        self.output_init_stddev, self.seed = output_init_stddev, seed
        self.head_dim = d_model // num_heads
        self.qkv = keras.layers.Dense(3 * d_model, kernel_initializer=init_normal(), name="qkv")
        self.out = keras.layers.Dense(d_model, kernel_initializer=init_normal(output_init_stddev), name="out")
        self.attention_dropout = keras.layers.Dropout(dropout, seed=seed)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.out.build(input_shape[:-1] + (self.d_model,))

    def call(self, x, mask, training=False):
        """`mask`: boolean, causal, broadcastable to [batch, heads, query, key] (see `attention_mask`)."""
        batch, time = tf.shape(x)[0], tf.shape(x)[1]
        qkv = tf.reshape(self.qkv(x), [batch, time, 3, self.num_heads, self.head_dim])
        q, k, v = tf.unstack(qkv, 3, axis=2)
        q = q * tf.cast(1.0 / math.sqrt(self.head_dim), q.dtype)
        static_time = x.shape[1]
        if static_time is not None and static_time >= _SPLIT_MIN_LENGTH and static_time % 2 == 0:
            # Queries of the first half can only see keys of the first half: skip the fully masked
            # quarter of the score matrix (the result is identical, the work is 3/4).
            half = static_time // 2
            first = self._attend(q[:, :half], k[:, :half], v[:, :half], mask[..., :half, :half], training)
            second = self._attend(q[:, half:], k, v, mask[..., half:, :], training)
            context = tf.concat([first, second], axis=1)
        else:
            context = self._attend(q, k, v, mask, training)
        return self.out(tf.reshape(context, [batch, time, self.d_model]))

    def init_cache(self, batch_size, length, dtype):
        """Room for the keys and values of `length` positions: ([batch, heads, length, head_dim]) x 2.

        Heads before positions: a decoding step's attention is then a batched matmul over (batch,
        head) on the cache as it is stored. With positions first, XLA copied and transposed every
        layer's whole cache at every step, which made generation twice as slow.
        """
        shape = [batch_size, self.num_heads, length, self.head_dim]
        return tf.zeros(shape, dtype), tf.zeros(shape, dtype)

    def call_cached(self, x, cache, index, key_mask):
        """Attention for `x` [batch, steps, d_model] at positions index..index+steps-1 of a cache.

        `cache` (`init_cache`) holds the keys and values of earlier positions; this call writes its
        own there and attends over all cached positions up to each query that `key_mask` [batch,
        length] marks real (left padding is not). Returns (output, new cache).
        Generation runs the prompt through it once, then one token at a time, so a new token costs
        one row of attention instead of a whole forward pass.
        """
        batch, steps = tf.shape(x)[0], tf.shape(x)[1]
        qkv = tf.reshape(self.qkv(x), [batch, steps, 3, self.num_heads, self.head_dim])
        q = qkv[:, :, 0] * tf.cast(1.0 / math.sqrt(self.head_dim), x.dtype)
        zero = tf.zeros([], tf.int32)

        def write(stored, new):  # new [batch, steps, heads, head_dim] at positions index...
            new = tf.cast(tf.transpose(new, [0, 2, 1, 3]), stored.dtype)
            return dynamic_update_slice(stored, new, tf.stack([zero, zero, index, zero]))

        keys, values = write(cache[0], qkv[:, :, 1]), write(cache[1], qkv[:, :, 2])
        mask = attention_mask(steps, key_mask, key_len=tf.shape(keys)[2], query_offset=index)
        scores = tf.where(mask, tf.cast(tf.einsum("bqhd,bhkd->bhqk", q, keys), tf.float32), _NEG_INF)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), values.dtype)
        context = tf.einsum("bhqk,bhkd->bqhd", weights, values)
        return self.out(tf.reshape(context, [batch, steps, self.d_model])), (keys, values)

    def _attend(self, q, k, v, mask, training):
        scores = tf.where(mask, tf.cast(tf.einsum("bqhd,bkhd->bhqk", q, k), tf.float32), _NEG_INF)
        weights = tf.cast(tf.nn.softmax(scores, axis=-1), v.dtype)
        weights = self.attention_dropout(weights, training=training)
        return tf.einsum("bhqk,bkhd->bqhd", weights, v)

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                "dropout": self.dropout, "output_init_stddev": self.output_init_stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfpref")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm decoder block: x + attn(ln(x)), then x + mlp(ln(x)) with GELU."""

    def __init__(self, d_model, num_heads, ff_dim, dropout=0.0, num_layers=1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.ff_dim = d_model, num_heads, ff_dim
        self.dropout, self.num_layers, self.seed = dropout, num_layers, seed
        # GPT-2's scaling of residual projections keeps the residual stream's variance flat in depth.
        residual_stddev = 0.02 / math.sqrt(2 * num_layers)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="attention_norm")
        self.attention = CausalSelfAttention(d_model, num_heads, dropout, residual_stddev, seed, name="attention")
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="mlp_norm")
        self.mlp_in = keras.layers.Dense(ff_dim, kernel_initializer=init_normal(), name="mlp_in")
        self.mlp_out = keras.layers.Dense(d_model, kernel_initializer=init_normal(residual_stddev), name="mlp_out")
        self.residual_dropout = keras.layers.Dropout(dropout, seed=None if seed is None else seed + 1)

    def build(self, input_shape):
        for layer in (self.attention_norm, self.attention, self.mlp_norm, self.mlp_in):
            layer.build(input_shape)
        self.mlp_out.build(input_shape[:-1] + (self.ff_dim,))

    def call(self, x, mask, training=False):
        x = x + self.residual_dropout(self.attention(self.attention_norm(x), mask, training=training),
                                      training=training)
        return x + self.residual_dropout(self._mlp(x), training=training)

    def call_cached(self, x, cache, index, key_mask):
        """The block at inference, its attention reading and extending `cache` (see CausalSelfAttention)."""
        attended, cache = self.attention.call_cached(self.attention_norm(x), cache, index, key_mask)
        x = x + attended
        return x + self._mlp(x), cache

    def _mlp(self, x):
        return self.mlp_out(tf.nn.gelu(self.mlp_in(self.mlp_norm(x)), approximate=True))

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout, "num_layers": self.num_layers,
                "seed": self.seed}


def sinusoidal_encoding(positions, depth):
    """[..., depth] sine/cosine encoding (Vaswani et al. 2017) of integer `positions` of any shape."""
    angles = tf.cast(positions, tf.float32)[..., None] * tf.exp(
        -math.log(10000.0) * tf.range(0, depth, 2, dtype=tf.float32) / depth)
    interleaved = tf.stack([tf.sin(angles), tf.cos(angles)], axis=-1)
    return tf.reshape(interleaved, tf.concat([tf.shape(positions), [depth]], axis=0))
