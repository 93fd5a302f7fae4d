"""Reward models: a scalar head on a language model (its last real token, or the mean over the
completion with --reward_pooling mean), trained on preferences.

Losses (--reward_loss; auto picks by the data's format):
  * bradley_terry: -log sigmoid(r_chosen - r_rejected - margin), on pairs (any format can be
    turned into pairs, see `PreferenceSet.comparisons`);
  * plackett_luce: -sum_i [r_(i) - logsumexp_{j >= i} r_(j)], completions ranked best first;
  * all_pairs: the mean Bradley-Terry loss over every ordered pair of a ranking;
  * regression: (r - mean rating)^2, weighted by the number of raters;
  * bce: binary cross-entropy of sigmoid(r) against the click-through rate, weighted by impressions.
When training ends the rewards of the training completions are measured and the reward model's
head is set to output them with mean 0 and std 1 (`RewardHead.mean/std`, saved in the checkpoint
and the export). The model is a `RewardModel` task model (tfpref.models.tasks).
"""
import numpy as np
import tensorflow as tf

from tfpref.data.batching import map_rows
from tfpref.data.loading import load_preference_data, preference_split_arrays
from tfpref.objectives.base import Objective, ObjectiveOutput

PAIR_LOSSES = ("bradley_terry",)
RANKING_LOSSES = ("plackett_luce", "all_pairs")
NORMALIZATION_FILE = "reward_normalization.json"


def bradley_terry_losses(chosen, rejected, margin=0.0):
    """-log sigmoid(chosen - rejected - margin), per pair."""
    return tf.nn.softplus(-(chosen - rejected - margin))


def valid_pairs(valid):
    """[n, k, k] float: 1 where i < j and both completions are real (`valid` [n, k]), the pairs of
    a best-first group counted once."""
    k = tf.shape(valid)[1]
    upper = tf.linalg.band_part(tf.ones([k, k]), 0, -1) - tf.eye(k)
    return tf.cast(valid[:, :, None] & valid[:, None, :], tf.float32) * upper


def plackett_luce_losses(rewards, valid):
    """-log P(ranking) under Plackett-Luce, per row; `rewards` [n, k] best first, `valid` [n, k]."""
    masked = tf.where(valid, rewards, -1e9)
    # logsumexp over positions j >= i: a reversed cumulative logsumexp.
    tail = tf.reverse(tf.math.cumulative_logsumexp(tf.reverse(masked, [1]), axis=1), [1])
    return -tf.reduce_sum(tf.where(valid, masked - tail, 0.0), axis=1)


def all_pairs_losses(rewards, valid):
    """Mean over i < j (both valid) of -log sigmoid(r_i - r_j), per row; best first."""
    pair_losses = tf.nn.softplus(-(rewards[:, :, None] - rewards[:, None, :]))
    both = valid_pairs(valid)
    return tf.reduce_sum(pair_losses * both, [1, 2]) / tf.maximum(tf.reduce_sum(both, [1, 2]), 1.0)


def _known_pairs(annotator_p, valid=None):
    """Where the annotator's probability is known: [n] for pairs, [n, k, k] for rankings (best-first
    rows i < j; `valid` [n, k] marks real completions)."""
    known = tf.math.is_finite(annotator_p)
    return known if valid is None else known & tf.cast(valid_pairs(valid), tf.bool)


def ceiling_sums(annotator_p, valid=None):
    """(sum of max(p, 1 - p), count) over the pairs whose annotator probability is known: the
    expected accuracy of a perfect reward model. `annotator_p` is [n] for pairs, or [n, k, k]
    for rankings (best-first rows i < j; `valid` [n, k] marks real completions)."""
    known = _known_pairs(annotator_p, valid)
    best = tf.where(known, tf.maximum(annotator_p, 1 - annotator_p), 0.0)
    return tf.reduce_sum(best), tf.reduce_sum(tf.cast(known, tf.float32))


def expected_accuracy_sums(rewards, annotator_p, valid=None):
    """(sum, count) of the probability that the annotator agrees with the reward model, over the
    pairs whose annotator probability is known (shapes as in `ceiling_sums`; `rewards` [n, 2] for
    pairs, [n, k] best first for rankings; a tie counts one half).

    Its mean is the accuracy the model is expected to score against the annotator's labels,
    without the noise of the one label drawn per pair: the figure to set against the ceiling,
    which is an expectation too."""
    known = _known_pairs(annotator_p, valid)
    if valid is None:
        difference = rewards[:, 0] - rewards[:, 1]
    else:
        difference = rewards[:, :, None] - rewards[:, None, :]
    agree = tf.where(difference > 0, annotator_p, tf.where(difference < 0, 1 - annotator_p, 0.5))
    return tf.reduce_sum(tf.where(known, agree, 0.0)), tf.reduce_sum(tf.cast(known, tf.float32))


def pairwise_correct(rewards, valid):
    """(correct ordered pairs, pairs) per row of best-first `rewards` [n, k]."""
    both = valid_pairs(valid)
    right = tf.cast(rewards[:, :, None] > rewards[:, None, :], tf.float32) * both
    return tf.reduce_sum(right, [1, 2]), tf.reduce_sum(both, [1, 2])


class RewardModelObjective(Objective):
    """Per-example loss of the --reward_loss chosen for the data (see the module docstring)."""

    name = "reward_model"
    result_files = {"reward_normalization": NORMALIZATION_FILE}

    def __init__(self, config):
        super().__init__(config)
        self.loss = config.align.reward_loss  # resolved from the data by tfpref.runs.resolve_config

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        """Preference groups of --data, split by prompt."""
        return preference_split_arrays(config, load_preference_data(config), wanted,
                                       pairs_only=config.align.reward_loss == "bradley_terry")

    def rewards(self, batch, model, training, normalize=False):
        """[n, k] rewards of the batch's completion groups."""
        return model.group_rewards(batch["token_ids"], batch["padding_mask"], batch["completion_mask"],
                                   normalize=normalize, training=training,
                                   freeze_backbone=self.config.train.freeze_backbone)

    def compute(self, batch, model, training):
        rewards = self.rewards(batch, model, training)
        valid = batch["completion_valid"]
        count = tf.cast(tf.shape(rewards)[0], tf.float32)
        metrics = {}
        if self.loss == "bradley_terry":
            margin = batch["margin"] + self.config.align.margin
            losses = bradley_terry_losses(rewards[:, 0], rewards[:, 1], margin)
            metrics["accuracy_ceiling"] = ceiling_sums(batch["annotator_p"])
            metrics["expected_accuracy"] = expected_accuracy_sums(rewards, batch["annotator_p"])
        elif self.loss in RANKING_LOSSES:
            ranking_losses = plackett_luce_losses if self.loss == "plackett_luce" else all_pairs_losses
            losses = ranking_losses(rewards, valid)
            p = batch["annotator_p"]  # [n, k, k] on ranking data, [n] on pairwise data
            pair_valid = valid if p.shape.rank == 3 else None
            metrics["accuracy_ceiling"] = ceiling_sums(p, pair_valid)
            metrics["expected_accuracy"] = expected_accuracy_sums(rewards, p, pair_valid)
        else:
            r, target = rewards[:, 0], batch["target"]
            if self.loss == "regression":
                losses = batch["weight"] * tf.square(r - target)
            else:
                losses = batch["weight"] * tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=r)
            # Sums for Pearson's correlation between reward and target, combined in `summarize`.
            for name, value in (("r", r), ("t", target), ("rr", r * r), ("tt", target * target),
                                ("rt", r * target)):
                metrics[f"moment_{name}"] = (tf.reduce_sum(value), count)
        if self.loss in PAIR_LOSSES + RANKING_LOSSES:
            correct, pairs = pairwise_correct(rewards, valid)
            metrics["accuracy"] = (tf.reduce_sum(correct), tf.reduce_sum(pairs))
        metrics["reward_mean"] = (tf.reduce_sum(tf.where(valid, rewards, 0.0)),
                                  tf.reduce_sum(tf.cast(valid, tf.float32)))
        return ObjectiveOutput(losses=losses, metrics=metrics)

    def summarize(self, means):
        out = {k: v for k, v in means.items() if not k.startswith("moment_")}
        if "moment_r" in means:
            m = means
            cov = m["moment_rt"] - m["moment_r"] * m["moment_t"]
            var = (m["moment_rr"] - m["moment_r"] ** 2) * (m["moment_tt"] - m["moment_t"] ** 2)
            out["correlation"] = float(cov / np.sqrt(var)) if var > 0 else 0.0
        if out.get("accuracy_ceiling"):
            for name in ("accuracy", "expected_accuracy"):
                if name in out:
                    out[f"{name}_vs_ceiling"] = out[name] / out["accuracy_ceiling"]
        return out

    def finish(self, model, train_data):
        """Normalise the model's rewards over the training completions (mean 0, std 1)."""
        score = tf.function(lambda batch: self.rewards(batch, model, False))
        arrays = train_data.arrays
        rewards = map_rows(score, arrays, 64)[arrays["completion_valid"]]
        mean, std = float(rewards.mean()), float(rewards.std())
        model.set_normalization(mean, std)
        return {"reward_normalization": {"mean": mean, "std": std, "completions": int(len(rewards))}}
