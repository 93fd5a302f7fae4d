"""Maximum likelihood: next-token cross-entropy."""
import math

import tensorflow as tf

from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.base import Objective, ObjectiveOutput


def token_nll_sums(batch, model, training):
    """(negative log-likelihood summed per example [batch], target tokens per example [batch])."""
    logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training)
    targets = tf.reduce_sum(tf.cast(batch["padding_mask"][:, 1:], tf.float32), axis=1)
    return -tf.reduce_sum(logprobs, axis=1), targets


class MleObjective(Objective):
    """loss_i = sum_t -log p(x_t | x_<t) / (T - 1) over the real tokens of example i.

    Dividing by the fixed length T - 1 (not by each row's own count) makes the global-batch mean
    equal the token-mean NLL for packed data and weights every token equally for padded data.
    """

    name = "mle"

    def compute(self, batch, model, training):
        nll, targets = token_nll_sums(batch, model, training)
        length = tf.cast(tf.shape(batch["token_ids"])[1] - 1, tf.float32)
        return ObjectiveOutput(losses=nll / length,
                               metrics={"nll": (tf.reduce_sum(nll), tf.reduce_sum(targets))})

    def summarize(self, means):
        if "nll" in means:
            means["perplexity"] = math.exp(min(means["nll"], 50.0))
            means["bits_per_byte"] = means["nll"] / math.log(2.0)
        return means
