"""Embedding -> LSTM -> causal self-attention over the LSTM states -> logits: the recurrent baseline."""
import keras
import tensorflow as tf

from tfpref.models.base import LanguageBackbone
from tfpref.models.layers import CausalSelfAttention, attention_mask


@keras.saving.register_keras_serializable(package="tfpref")
class LstmLM(LanguageBackbone):
    """`model(token_ids, padding_mask) -> logits` [batch, time, vocab], float32.

    The LSTM stack carries order; one causal attention layer over its states lets each position
    look back at earlier states directly (the long-range lookups an LSTM state forgets), added as a
    residual with pre-LayerNorm.

    Args:
        vocab_size, d_model: token ids and width of embedding, LSTM and attention.
        num_layers: stacked LSTM layers.
        num_heads: heads of the attention layer.
        dropout: dropout between layers and on attention weights.
        tie_embeddings: reuse the embedding matrix as the output projection.
        seed: seed of the dropout layers.
        ff_dim, max_seq_len: accepted so both models share one config; the LSTM has no
            feed-forward block and no length limit.
    """

    def __init__(self, vocab_size, d_model, num_layers, num_heads, ff_dim=None, dropout=0.0,
                 tie_embeddings=True, max_seq_len=None, seed=None, **kwargs):
        super().__init__(vocab_size, d_model, num_layers, num_heads, ff_dim, dropout, tie_embeddings,
                         max_seq_len, seed, **kwargs)
        self.lstms = [keras.layers.LSTM(d_model, return_sequences=True, return_state=True,
                                        name=f"lstm_{i}") for i in range(num_layers)]
        self.between_dropout = keras.layers.Dropout(dropout, seed=seed)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="attention_norm")
        self.attention = CausalSelfAttention(d_model, num_heads, dropout,
                                             seed=None if seed is None else seed + 1, name="attention")
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")

    def build(self, input_shape=None):
        if self.built:  # deserialization builds from the saved config before the caller does
            return
        self.embedding.build((None, None))
        for lstm in self.lstms:
            lstm.build((None, None, self.d_model))
        for layer in (self.attention_norm, self.attention, self.final_norm):
            layer.build((None, None, self.d_model))
        self.built = True

    def recurrent_states(self, token_ids, padding_mask=None, initial_states=None, training=False,
                         embedding_offset=None):
        """LSTM outputs [batch, time, d_model] and the final (h, c) of each layer.

        Padding positions leave the state unchanged, so a left-padded row ends in the same state
        as the unpadded one.
        """
        x = self.embed_tokens(token_ids, embedding_offset)
        mask = None if padding_mask is None else tf.cast(padding_mask, tf.bool)
        final_states = []
        for i, lstm in enumerate(self.lstms):
            x = self.between_dropout(x, training=training)
            initial = None if initial_states is None else list(initial_states[i])
            x, h, c = lstm(x, initial_state=initial, mask=mask, training=training)
            final_states.append((h, c))
        # A fresh tensor without the Keras mask the LSTM attaches (the attention masks by itself).
        return tf.identity(x), final_states

    def hidden_states(self, token_ids, padding_mask=None, training=False, positions=None,
                      embedding_offset=None):
        """[batch, time, d_model] final-normalised states (`positions` unused: the LSTM counts)."""
        x, _ = self.recurrent_states(token_ids, padding_mask, training=training,
                                     embedding_offset=embedding_offset)
        mask = attention_mask(tf.shape(token_ids)[1], padding_mask)
        x = x + self.attention(self.attention_norm(x), mask, training=training)
        return self.final_norm(x)

    def init_cache(self, batch_size, length):
        """(h, c) of each LSTM layer and the attention layer's keys and values."""
        dtype = self.embedding.compute_dtype
        state = tf.zeros([batch_size, self.d_model], dtype)
        return {"lstm": tuple((state, state) for _ in self.lstms),
                "attention": self.attention.init_cache(batch_size, length, dtype)}

    def hidden_states_cached(self, token_ids, cache, index, key_mask, positions=None, embedding_offset=None):
        steps = token_ids.shape[1]
        if steps == 1:  # one decoding step: the bare cells skip the layer's time loop
            x = self.embed_tokens(token_ids, embedding_offset)[:, 0]
            lstm_states = []
            for lstm, (h, c) in zip(self.lstms, cache["lstm"]):
                x, (h, c) = lstm.cell(x, [h, c])
                lstm_states.append((h, c))
            x = x[:, None]
        else:
            step_mask = tf.slice(key_mask, [0, index], tf.shape(token_ids))
            x, lstm_states = self.recurrent_states(token_ids, step_mask, cache["lstm"],
                                                   embedding_offset=embedding_offset)
        attended, attention_cache = self.attention.call_cached(
            self.attention_norm(x), cache["attention"], index, key_mask)
        return self.final_norm(x + attended), {"lstm": tuple(lstm_states), "attention": attention_cache}
