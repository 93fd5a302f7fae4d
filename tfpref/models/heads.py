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
