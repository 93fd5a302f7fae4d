"""Direct preference optimisation (Rafailov et al. 2023) and IPO (Azar et al. 2023), offline.

With h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]:
  * DPO: loss = -log sigmoid(beta h)
  * IPO: loss = (h - 1 / (2 beta))^2
The reference log-probs do not change during training: they are computed once, with the
--init_from policy, and cached in <model_dir>/reference_logprobs.npz (a resumed run, whose model
is no longer the reference, reads them from there).
"""
import hashlib
import os

import numpy as np
import tensorflow as tf

from tfpref.data.batching import map_rows
from tfpref.data.loading import load_preference_data, preference_split_arrays
from tfpref.models.logprobs import completion_logprobs
from tfpref.objectives.base import Objective, ObjectiveOutput
from tfpref.rl.reference import reference_model

DEFAULT_BETA = 0.1
REFERENCE_FILE = "reference_logprobs.npz"


def dpo_losses(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta, ipo=False):
    """Per-pair DPO (or IPO) loss from sequence log-probs."""
    h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    if ipo:
        return tf.square(h - 1.0 / (2.0 * beta))
    return tf.nn.softplus(-beta * h)


class DpoObjective(Objective):
    """Pairs (chosen first) of --data; implicit rewards beta * (log pi - log pi_ref) are logged."""

    name = "dpo"

    def __init__(self, config):
        super().__init__(config)
        self.beta = config.feedback.beta or DEFAULT_BETA

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        """Pairs of --data, each with its reference log-probs (from the cache if it matches)."""
        loaded = preference_split_arrays(config, load_preference_data(config), wanted, pairs_only=True)
        path = os.path.join(config.model_dir, REFERENCE_FILE)
        cached = dict(np.load(path)) if os.path.exists(path) else {}
        reference = None
        for name, data in loaded.items():
            if data is None:
                continue
            key = _fingerprint(data)
            if name in cached and cached.get(f"{name}_key") == key:
                data.arrays["reference_logprobs"] = cached[name]
                continue
            if reference is None:
                reference = reference_model(config)
            data.arrays["reference_logprobs"] = reference_logprobs(reference, data)
        return loaded

    def artifacts(self, train_data, eval_data):
        """The reference log-probs, for a resumed run to read (its model is no longer the reference)."""
        arrays = {}
        for name, data in (("train", train_data), ("validation", eval_data)):
            if data is not None:
                arrays[name] = data.arrays["reference_logprobs"]
                arrays[f"{name}_key"] = _fingerprint(data)
        return {REFERENCE_FILE: arrays}

    def compute(self, batch, model, training):
        policy = completion_logprobs(model, batch["token_ids"], batch["padding_mask"],
                                     batch["completion_mask"], training)
        reference = batch["reference_logprobs"]
        losses = dpo_losses(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], self.beta,
                            self.config.align.ipo)
        chosen = self.beta * (policy[:, 0] - reference[:, 0])
        rejected = self.beta * (policy[:, 1] - reference[:, 1])
        count = tf.cast(tf.shape(losses)[0], tf.float32)
        metrics = {"reward_accuracy": (tf.reduce_sum(tf.cast(chosen > rejected, tf.float32)), count),
                   "reward_margin": (tf.reduce_sum(chosen - rejected), count),
                   "reward_chosen": (tf.reduce_sum(chosen), count),
                   "reward_rejected": (tf.reduce_sum(rejected), count)}
        return ObjectiveOutput(losses=losses, metrics=metrics)


def reference_logprobs(model, data, batch_size=32):
    """[n, 2] log p(completion | prompt) of every row of ArrayData `data` under `model`."""
    compute = tf.function(lambda batch: completion_logprobs(model, batch["token_ids"], batch["padding_mask"],
                                                            batch["completion_mask"]))
    names = ("token_ids", "padding_mask", "completion_mask")
    return map_rows(compute, {name: data.arrays[name] for name in names}, batch_size).astype(np.float32)


def _fingerprint(data):
    digest = hashlib.sha1(data.arrays["token_ids"].tobytes()).hexdigest()
    return np.array(digest)
