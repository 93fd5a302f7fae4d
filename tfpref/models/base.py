"""What every tfpref language model shares: its constructor arguments, logits and config."""
import keras
import tensorflow as tf

from tfpref.data.tokenizer import EOS_ID, ByteTokenizer
from tfpref.models.layers import init_normal


class LanguageBackbone(keras.Model):
    """Base of the language-model backbones: `model(token_ids, padding_mask) -> logits` [batch, time, vocab].

    Subclasses build their layers after calling this constructor (which creates the embedding) and
    implement `hidden_states`, plus `init_cache` and `hidden_states_cached` for generation; logits
    come from the (optionally tied) embedding matrix, in float32 whatever the compute dtype.

    `positions` [batch, time] (default 0, 1, 2, ... in every row) are the positions each token is
    encoded at: a left-padded row starts counting at its first real token. `embedding_offset`
    ([batch, time or 1, d_model]) is added to the token embeddings: how a preference vector
    conditions the model.

    `eos_id` and `generation_banned_ids` are what generation stops at and never emits, and
    `control_tokens` the ids of the control tokens by name, in the model's vocabulary (the byte
    tokenizer's, whose reserved ids a subword vocabulary keeps; it bans its unknown piece as well).
    """

    eos_id = EOS_ID
    generation_banned_ids = ByteTokenizer.generation_banned_ids
    control_tokens = ByteTokenizer.control_tokens

    def __init__(self, vocab_size, d_model, num_layers, num_heads, ff_dim=None, dropout=0.0,
                 tie_embeddings=True, max_seq_len=None, seed=None, generation_banned_ids=None, **kwargs):
        super().__init__(**kwargs)
        if generation_banned_ids is not None:  # a subword vocabulary's: its unknown piece too
            self.generation_banned_ids = tuple(int(i) for i in generation_banned_ids)
        self.vocab_size, self.d_model, self.num_layers = vocab_size, d_model, num_layers
        self.num_heads, self.ff_dim, self.dropout = num_heads, ff_dim, dropout
        self.tie_embeddings, self.max_seq_len, self.seed = tie_embeddings, max_seq_len, seed
        self.embedding = keras.layers.ReversibleEmbedding(
            vocab_size, d_model, tie_weights=tie_embeddings, embeddings_initializer=init_normal(),
            name="embedding")

    def hidden_states(self, token_ids, padding_mask=None, training=False, positions=None,
                      embedding_offset=None):
        """[batch, time, d_model] final-normalised states."""
        raise NotImplementedError

    def init_cache(self, batch_size, length):
        """The empty inference state for `length` positions that `hidden_states_cached` extends."""
        raise NotImplementedError

    def hidden_states_cached(self, token_ids, cache, index, key_mask, positions, embedding_offset=None):
        """(states [batch, steps, d_model], new cache) of `token_ids` [batch, steps] placed at
        positions index..index+steps-1 of the cache, given everything cached before them.

        `key_mask` [batch, length] marks the cache positions holding real tokens. Equals
        `hidden_states` of the whole sequence so far, at the new positions only.
        """
        raise NotImplementedError

    def logits_from_hidden(self, hidden):
        return tf.cast(self.embedding(hidden, reverse=True), tf.float32)

    def call(self, token_ids, padding_mask=None, training=False, positions=None, embedding_offset=None):
        return self.logits_from_hidden(self.hidden_states(
            token_ids, padding_mask, training=training, positions=positions, embedding_offset=embedding_offset))

    def embed_tokens(self, token_ids, embedding_offset=None):
        """Token embeddings, plus `embedding_offset` when given."""
        x = self.embedding(token_ids)
        return x if embedding_offset is None else x + tf.cast(embedding_offset, x.dtype)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "d_model": self.d_model,
                "num_layers": self.num_layers, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "dropout": self.dropout, "tie_embeddings": self.tie_embeddings,
                "max_seq_len": self.max_seq_len, "seed": self.seed,
                "generation_banned_ids": list(self.generation_banned_ids)}
