"""Embedding -> residual dilated 1-D convolutions: a bidirectional byte encoder for reward models.

Not a language model (each state sees bytes on both sides), so only --objective reward_model takes
it. Its bias is locality: every state reads a window of 1 + (kernel - 1) * sum(dilations) bytes
(57 with the five-byte kernel and six layers, dilations 1, 2, 4, 1, 2, 4), which is where style
rules such as PEP 8's live. With no attention it needs a fraction of a transformer's compute per
comparison, so a reward model trained from scratch on it sees more comparisons in the same time.
Measured comparisons with transformer reward models: docs/reward-model-study.md.
"""
import keras
import tensorflow as tf

from tfpref.models.layers import init_normal

KERNEL_SIZE = 5
DILATIONS = (1, 2, 4)  # cycled over the layers


@keras.saving.register_keras_serializable(package="tfpref")
class ConvEncoder(keras.Model):
    """`model.hidden_states(token_ids, padding_mask) -> [batch, time, d_model]`, bidirectional.

    Each layer adds `conv(LayerNorm(x))` (GELU, "same" padding, dilation cycling 1, 2, 4) to x.
    Padding positions are zeroed before every convolution, so a row's states do not depend on how
    much padding follows it.

    Args:
        vocab_size, d_model: token ids and width of embeddings and convolutions.
        num_layers: convolution layers.
        dropout: dropout on each layer's residual branch.
        seed: seed of the dropout layer.
        num_heads, ff_dim, tie_embeddings, max_seq_len: accepted so every model shares one config;
            the encoder has no attention, no feed-forward block, no output projection and no
            length limit.
    """

    def __init__(self, vocab_size, d_model, num_layers, num_heads=None, ff_dim=None, dropout=0.0,
                 tie_embeddings=True, max_seq_len=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model, self.num_layers = vocab_size, d_model, num_layers
        self.num_heads, self.ff_dim, self.dropout = num_heads, ff_dim, dropout
        self.tie_embeddings, self.max_seq_len, self.seed = tie_embeddings, max_seq_len, seed
        self.embedding = keras.layers.Embedding(vocab_size, d_model, embeddings_initializer=init_normal(),
                                                name="embedding")
        self.norms = [keras.layers.LayerNormalization(epsilon=1e-5, name=f"norm_{i}") for i in range(num_layers)]
        self.convs = [keras.layers.Conv1D(d_model, KERNEL_SIZE, padding="same", activation="gelu",
                                          dilation_rate=DILATIONS[i % len(DILATIONS)], name=f"conv_{i}")
                      for i in range(num_layers)]
        self.residual_dropout = keras.layers.Dropout(dropout, seed=seed)
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")

    def build(self, input_shape=None):
        if self.built:  # deserialization builds from the saved config before the caller does
            return
        self.embedding.build((None, None))
        for norm, conv in zip(self.norms, self.convs):
            norm.build((None, None, self.d_model))
            conv.build((None, None, self.d_model))
        self.final_norm.build((None, None, self.d_model))
        self.built = True

    def hidden_states(self, token_ids, padding_mask=None, training=False, positions=None,
                      embedding_offset=None):
        """[batch, time, d_model] final-normalised states (`positions` unused: convolutions see
        relative offsets only). `embedding_offset` is added to the token embeddings."""
        x = self.embedding(token_ids)
        if embedding_offset is not None:
            x = x + tf.cast(embedding_offset, x.dtype)
        keep = 1.0 if padding_mask is None else tf.cast(padding_mask, x.dtype)[..., None]
        for norm, conv in zip(self.norms, self.convs):
            x = x + self.residual_dropout(conv(norm(x) * keep), training=training)
        return self.final_norm(x)

    def call(self, token_ids, padding_mask=None, training=False, positions=None, embedding_offset=None):
        return self.hidden_states(token_ids, padding_mask, training, positions, embedding_offset)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "d_model": self.d_model,
                "num_layers": self.num_layers, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "dropout": self.dropout, "tie_embeddings": self.tie_embeddings,
                "max_seq_len": self.max_seq_len, "seed": self.seed}
