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

from tfpref.errors import UserError
from tfpref.models.logprobs import completion_logprobs
from tfpref.objectives.base import Objective, ObjectiveOutput

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
    packed = False
    fine_tunes_policy = True

    def __init__(self, config):
        super().__init__(config)
        self.beta = config.feedback.beta or DEFAULT_BETA

    @classmethod
    def check_config(cls, config):
        if not config.train.init_from:
            raise UserError("--objective dpo fine-tunes a pretrained policy (also the reference): "
                            "give --init_from RUN_DIR")

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        """Pairs of --data, each with its reference log-probs (from the cache if it matches)."""
        from tfpref.data.loading import load_preference_data, preference_split_arrays

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
                from tfpref.training.reference import reference_model

                reference = reference_model(config)
            data.arrays["reference_logprobs"] = reference_logprobs(reference, data)
        return loaded

    def prepare(self, trainer):
        """Cache the reference log-probs in the run directory, for a resumed run to read."""
        splits = {"train": trainer.train_data, "validation": trainer.eval_data}
        arrays = {}
        for name, data in splits.items():
            if data is not None:
                arrays[name] = data.arrays["reference_logprobs"]
                arrays[f"{name}_key"] = _fingerprint(data)
        path = os.path.join(self.config.model_dir, REFERENCE_FILE)
        if trainer.checkpointer.is_chief and not os.path.exists(path):
            np.savez(path, **arrays)

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
    arrays = data.arrays
    n = data.num_examples
    compute = tf.function(lambda ids, mask, completion: completion_logprobs(model, ids, mask, completion))
    out = []
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) % n  # full batches: one trace
        out.append(compute(arrays["token_ids"][rows], arrays["padding_mask"][rows],
                           arrays["completion_mask"][rows]).numpy()[:min(batch_size, n - start)])
    return np.concatenate(out).astype(np.float32)


def _fingerprint(data):
    digest = hashlib.sha1(data.arrays["token_ids"].tobytes()).hexdigest()
    return np.array(digest)
