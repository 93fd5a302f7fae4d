"""Preference-vector conditioning: a continuous, chatbot-style cousin of conditional training.

Instead of a discrete control token, each segment's preference attributes, here its
misalignment score and its length, form a small vector; a learned projection of it is added
to the embedding of every token of the segment. At generation the projection of the *desired*
vector (score 0, a typical length) is added to every position, so one model can be asked for any
mix of the attributes.
"""
import keras
import numpy as np
import tensorflow as tf

from tfpref.models.layers import init_normal
from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import ObjectiveOutput
from tfpref.objectives.mle import MleObjective, lm_metrics, per_example

# Scores at or above this saturate the score attribute at 1 (one PEP 8 violation in a 40-byte line
# is 0.025, attribute 0.5).
SCORE_SCALE = 0.05
# Lengths are encoded as log1p(bytes) / log1p(MAX_LENGTH), clipped to 1.
MAX_LENGTH = 4096
# The length asked for at generation: a typical segment of the stdlib at each granularity.
TYPICAL_SEGMENT_BYTES = {"line": 40, "chunk": 1200, "document": 1200}
MISALIGNED_SCORE = SCORE_SCALE


def preference_features(scores, lengths):
    """float32 [..., 2]: (score attribute, length attribute), each in [0, 1]."""
    score = tf.minimum(tf.cast(scores, tf.float32) / SCORE_SCALE, 1.0)
    length = tf.minimum(tf.math.log1p(tf.cast(lengths, tf.float32)) / np.log1p(MAX_LENGTH), 1.0)
    return tf.stack([score, length], axis=-1)


class PreferenceVectorObjective(MleObjective):
    """loss = next-token cross-entropy with each token's segment vector projected into its embedding."""

    name = "preference_vector"
    needs_scores = True
    controllable = True

    def __init__(self, config):
        super().__init__(config)
        self.projection = keras.layers.Dense(config.model.d_model, kernel_initializer=init_normal(),
                                             name="preference_projection")
        self.projection.build((None, 2))
        self.trainable_layers = [self.projection]

    def offsets(self, scores, lengths):
        """[..., d_model] embedding offsets of preference vectors given as scores and lengths."""
        return self.projection(preference_features(scores, lengths))

    def compute(self, batch, model, training):
        # Offsets are zero on padding (and therefore contribute nothing there).
        offsets = self.offsets(batch["token_scores"], batch["segment_lengths"])
        offsets *= tf.cast(batch["padding_mask"], offsets.dtype)[..., None]
        logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training,
                                     embedding_offset=offsets)
        return ObjectiveOutput(losses=per_example(-logprobs, batch),
                               metrics=lm_metrics(logprobs, batch, self.config.feedback.threshold))

    def condition(self, batch_size, aligned=True):
        score = 0.0 if aligned else MISALIGNED_SCORE
        length = TYPICAL_SEGMENT_BYTES[self.config.feedback.segment]
        return self.offsets(tf.fill([batch_size], score), tf.fill([batch_size], length))
