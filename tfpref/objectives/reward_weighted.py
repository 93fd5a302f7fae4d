"""Reward-weighted regression (RWR) and advantage-weighted regression (AWR) on scored text.

The reward of a target token is minus its segment's misalignment score.
  * RWR: each token's cross-entropy is weighted by exp(reward / beta).
  * AWR (Peng et al. 2019; Korbak et al. 2023's code): a value head on the language model's
    hidden states predicts the reward of the next token; the weight is exp(advantage / beta),
    advantage = reward - value (value not differentiated here), clipped at MAX_WEIGHT; the loss
    mixes the weighted cross-entropy and the value's squared error with --awr_alpha.
"""
import tensorflow as tf

from tfpref.models.logprobs import sequence_logprobs, token_logprobs_from_logits
from tfpref.objectives.base import ObjectiveOutput
from tfpref.objectives.mle import MleObjective, lm_metrics, per_example

MAX_WEIGHT = 1000.0
DEFAULT_BETA = 1.0  # what --beta 0 means here


def rwr_token_losses(logprobs, rewards, beta):
    """exp(reward / beta) * -log p, per target token."""
    return tf.exp(rewards / beta) * -logprobs


def awr_token_losses(logprobs, values, rewards, alpha, beta):
    """(alpha * w * -log p + (1 - alpha) * (value - reward)^2, weights), w = clip(exp(A / beta))."""
    advantages = rewards - tf.stop_gradient(values)
    weights = tf.minimum(tf.exp(advantages / beta), MAX_WEIGHT)
    return alpha * weights * -logprobs + (1.0 - alpha) * tf.square(values - rewards), weights


def _rewards_and_mask(batch):
    mask = tf.cast(batch["padding_mask"][:, 1:], tf.float32)
    return -batch["token_scores"][:, 1:] * mask, mask


class RwrObjective(MleObjective):
    """loss_i = sum_t exp(-score_t / beta) (-log p_t) / (T - 1)."""

    name = "rwr"
    needs_scores = True

    def compute(self, batch, model, training):
        logprobs = sequence_logprobs(model, batch["token_ids"], batch["padding_mask"], training=training)
        rewards, mask = _rewards_and_mask(batch)
        token_losses = rwr_token_losses(logprobs, rewards, self.config.feedback.beta or DEFAULT_BETA) * mask
        return ObjectiveOutput(losses=per_example(token_losses, batch),
                               metrics=lm_metrics(logprobs, batch, self.config.feedback.threshold, self.control_ids,
                                                  self.byte_lengths))


class AwrObjective(MleObjective):
    """loss_i = sum_t [alpha w_t (-log p_t) + (1 - alpha) (V_t - r_t)^2] / (T - 1); V is the
    `CausalLM`'s value head."""

    name = "awr"
    needs_scores = True

    def compute(self, batch, model, training):
        token_ids, padding_mask = batch["token_ids"], batch["padding_mask"]
        hidden = model.hidden_states(token_ids[:, :-1], padding_mask[:, :-1], training=training)
        logprobs = token_logprobs_from_logits(model.logits_from_hidden(hidden), token_ids[:, 1:])
        rewards, mask = _rewards_and_mask(batch)
        logprobs *= mask
        values = model.value_head(hidden) * mask
        feedback = self.config.feedback
        token_losses, weights = awr_token_losses(logprobs, values, rewards, feedback.awr_alpha,
                                                  feedback.beta or DEFAULT_BETA)
        metrics = lm_metrics(logprobs, batch, feedback.threshold, self.control_ids, self.byte_lengths)
        count = tf.reduce_sum(mask)
        metrics.update(awr_weight=(tf.reduce_sum(weights * mask), count),
                       value_mse=(tf.reduce_sum(tf.square(values - rewards) * mask), count))
        return ObjectiveOutput(losses=per_example(token_losses * mask, batch), metrics=metrics)
