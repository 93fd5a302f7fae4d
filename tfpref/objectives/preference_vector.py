"""Preference-vector conditioning: a continuous, chatbot-style cousin of conditional training.

Instead of a discrete control token, each segment's preference attributes, here its
misalignment score and its length, form a small vector; a learned projection of it is added
to the embedding of every token of the segment. At generation the projection of the *desired*
vector (score 0, a typical length) is added to every position, so one model can be asked for any
mix of the attributes.
"""
import tensorflow as tf

from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import ObjectiveOutput
from tfpref.objectives.mle import MleObjective, lm_metrics, per_example


class PreferenceVectorObjective(MleObjective):
    """loss = next-token cross-entropy with each token's segment vector projected into its embedding
    (the `CausalLM` task model's conditioning "preference_vector" holds the projection)."""

    name = "preference_vector"
    needs_scores = True

    def compute(self, batch, model, training):
        # Offsets are zero on padding (and therefore contribute nothing there).
        offsets = model.preference_offsets(batch["token_scores"], batch["segment_lengths"])
        offsets *= tf.cast(batch["padding_mask"], offsets.dtype)[..., None]
        logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training,
                                     embedding_offset=offsets)
        return ObjectiveOutput(losses=per_example(-logprobs, batch),
                               metrics=lm_metrics(logprobs, batch, self.config.feedback.threshold, self.control_ids,
                                                  self.byte_lengths))
