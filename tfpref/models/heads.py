"""Small heads that sit on a backbone's hidden states [batch, time, d_model]."""
import keras
import tensorflow as tf

from tfpref.models.layers import init_normal


@keras.saving.register_keras_serializable(package="tfpref")
class ScalarHead(keras.layers.Layer):
    """One scalar per position ([batch, time], float32): a value estimate or a reward.

    Example:
        >>> values = ScalarHead()(model.hidden_states(token_ids))
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.projection = keras.layers.Dense(1, kernel_initializer=init_normal(), name="projection")

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, hidden):
        return tf.cast(tf.squeeze(self.projection(hidden), -1), tf.float32)


def last_valid_state(hidden, padding_mask):
    """[batch, d_model]: the hidden state of each row's last non-padding position."""
    lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)
    return tf.gather(hidden, tf.maximum(lengths - 1, 0), axis=1, batch_dims=1)


@keras.saving.register_keras_serializable(package="tfpref")
class ClassifierHead(keras.layers.Layer):
    """Class logits [batch, num_classes] from the state at each sequence's last real token."""

    def __init__(self, num_classes, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.dropout = num_classes, dropout
        self.dropout_layer = keras.layers.Dropout(dropout)
        self.projection = keras.layers.Dense(num_classes, kernel_initializer=init_normal(), name="projection")

    def build(self, input_shape):
        self.projection.build((input_shape[0], input_shape[-1]))

    def call(self, hidden, padding_mask, training=False):
        pooled = self.dropout_layer(last_valid_state(hidden, padding_mask), training=training)
        return tf.cast(self.projection(pooled), tf.float32)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="tfpref")
class RewardHead(keras.layers.Layer):
    """Scalar reward of each sequence, normalised by stored statistics.

    pooling "last": a projection of the last real token's state (the usual reward model);
    "mean": the mean of a per-token score over the completion's tokens, a bias toward rewards
    that are densities of local features (PEP 8 violations per byte is one).
    `normalize=False` gives the raw score (what is trained); `mean` and `std` are set once after
    training (`set_normalization`) so that served rewards have mean 0 and std 1 on the reference set.
    """

    def __init__(self, pooling="last", **kwargs):
        super().__init__(**kwargs)
        self.pooling = pooling
        self.score = ScalarHead(name="score")

    def build(self, input_shape):
        self.score.build(input_shape)
        self.mean = self.add_weight(shape=(), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(), initializer="ones", trainable=False, name="std")

    def call(self, hidden, padding_mask, completion_mask=None, normalize=True):
        if self.pooling == "mean":
            weights = tf.cast(padding_mask if completion_mask is None else completion_mask, tf.float32)
            raw = tf.reduce_sum(self.score(hidden) * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1.0)
        else:
            raw = self.score(last_valid_state(hidden, padding_mask))
        return (raw - self.mean) / self.std if normalize else raw

    def set_normalization(self, mean, std):
        self.mean.assign(mean)
        self.std.assign(max(std, 1e-6))

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling}
