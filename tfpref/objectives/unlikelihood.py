"""Unlikelihood training (Welleck et al. 2019) on misaligned segments, as in Korbak et al. 2023."""
import tensorflow as tf

from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import ObjectiveOutput
from tfpref.objectives.mle import MleObjective, lm_metrics, per_example

_MIN_PROBABILITY = 1e-20  # log(1 - p) is clamped here when p rounds to 1


def unlikelihood_token_losses(logprobs, aligned, alpha):
    """-log p on aligned targets, -alpha * log(1 - p) on misaligned ones ([batch, T-1])."""
    one_minus_p = tf.maximum(-tf.math.expm1(logprobs), _MIN_PROBABILITY)  # 1 - exp(log p), exactly
    aligned = tf.cast(aligned, tf.float32)
    return aligned * -logprobs + (1.0 - aligned) * -alpha * tf.math.log(one_minus_p)


class UnlikelihoodObjective(MleObjective):
    """loss_i = sum_t [a_t (-log p_t) + (1 - a_t) alpha (-log(1 - p_t))] / (T - 1),
    a_t = 1 when target t's segment scores at most --threshold (padding contributes 0)."""

    name = "unlikelihood"
    needs_scores = True
    uses_threshold = True

    def compute(self, batch, model, training):
        logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training)
        aligned = batch["token_scores"][:, 1:] <= self.config.feedback.threshold
        token_losses = unlikelihood_token_losses(logprobs, aligned, self.config.feedback.ul_alpha)
        token_losses *= tf.cast(batch["padding_mask"][:, 1:], tf.float32)
        return ObjectiveOutput(losses=per_example(token_losses, batch),
                               metrics=lm_metrics(logprobs, batch, self.config.feedback.threshold, self.control_ids,
                                                  self.byte_lengths))
