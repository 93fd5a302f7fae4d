"""Decoder-only transformer language model with sinusoidal positions."""
import math

import keras
import tensorflow as tf

from tfpref.models.base import LanguageBackbone
from tfpref.models.layers import TransformerBlock, attention_mask, sinusoidal_encoding


@keras.saving.register_keras_serializable(package="tfpref")
class TransformerLM(LanguageBackbone):
    """`model(token_ids, padding_mask) -> logits` [batch, time, vocab], float32.

    Args:
        vocab_size: number of token ids.
        d_model, num_layers, num_heads, ff_dim: width, depth, attention heads, feed-forward width.
        dropout: dropout on attention weights and residual branches.
        tie_embeddings: reuse the input embedding matrix as the output projection.
        max_seq_len: longest sequence the model accepts.
        seed: seed of the dropout layers.

    Example:
        >>> model = TransformerLM(vocab_size=272, d_model=64, num_layers=2, num_heads=2, ff_dim=128)
        >>> logits = model(tf.zeros([1, 8], tf.int32))
    """

    def __init__(self, vocab_size, d_model, num_layers, num_heads, ff_dim, dropout=0.0,
                 tie_embeddings=True, max_seq_len=2048, seed=None, **kwargs):
        super().__init__(vocab_size, d_model, num_layers, num_heads, ff_dim, dropout, tie_embeddings,
                         max_seq_len, seed, **kwargs)
        self.embedding_dropout = keras.layers.Dropout(dropout, seed=seed)
        self.blocks = [TransformerBlock(d_model, num_heads, ff_dim, dropout, num_layers,
                                        None if seed is None else seed + 2 * (i + 1), name=f"block_{i}")
                       for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")

    def build(self, input_shape=None):
        if self.built:  # deserialization builds from the saved config before the caller does
            return
        self.embedding.build((None, None))
        for block in self.blocks:
            block.build((None, None, self.d_model))
        self.final_norm.build((None, None, self.d_model))
        self.built = True

    def hidden_states(self, token_ids, padding_mask=None, training=False, positions=None,
                      embedding_offset=None):
        """[batch, time, d_model] final-normalised states."""
        time = tf.shape(token_ids)[1]
        x = self._embed(token_ids, tf.range(time) if positions is None else positions, embedding_offset)
        x = self.embedding_dropout(x, training=training)
        mask = attention_mask(time, padding_mask)
        for block in self.blocks:
            x = block(x, mask, training=training)
        return self.final_norm(x)

    def init_cache(self, batch_size, length):
        """Keys and values of each block (`CausalSelfAttention.init_cache`), a tuple."""
        return tuple(block.attention.init_cache(batch_size, length, self.embedding.compute_dtype)
                     for block in self.blocks)

    def hidden_states_cached(self, token_ids, cache, index, key_mask, positions, embedding_offset=None):
        x = self._embed(token_ids, positions, embedding_offset)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block.call_cached(x, layer_cache, index, key_mask)
            new_cache.append(layer_cache)
        return self.final_norm(x), tuple(new_cache)

    def _embed(self, token_ids, positions, embedding_offset=None):
        # sqrt(d) scaling keeps token embeddings (std 0.02) from being drowned by the unit-scale
        # sinusoids; the tied output projection sees the unscaled matrix.
        x = self.embed_tokens(token_ids, embedding_offset) * math.sqrt(self.d_model)
        return x + tf.cast(sinusoidal_encoding(positions, self.d_model), x.dtype)
