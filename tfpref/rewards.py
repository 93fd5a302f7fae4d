"""Rewards of (prompt, completion) pairs: from a trained reward model run, or minus a scorer's score.

Example:
    >>> reward = reward_function(reward_model="logs/rm")       # or reward_function(scorer="pep8")
    >>> reward(["def f(x):\\n"], ["    return x\\n"], finished=[True])   # array([0.73], float32)
"""
import json
import os

import numpy as np
import tensorflow as tf

from tfpref.errors import UserError


class ScorerReward:
    """reward = -score of prompt + completion (a cut-off last line is scored without its trailing
    spaces, as in the misalignment evaluation)."""

    def __init__(self, scorer_name):
        from tfpref.scorers.base import get_scorer

        self.scorer = get_scorer(scorer_name)
        self.description = f"-{scorer_name} score"

    def __call__(self, prompts, completions, finished):
        from tfpref.evaluation.misalignment import scored_text

        texts = [scored_text(p + c, f) for p, c, f in zip(prompts, completions, finished)]
        return -np.asarray(self.scorer.score(texts), np.float32)


def check_reward_model_dir(model_dir):
    """Raise UserError unless `model_dir` is a trained --objective=reward_model run."""
    from tfpref.config import config_path

    if not os.path.exists(config_path(model_dir)):
        raise UserError(f"--reward_model {model_dir}: not a run directory (no config.json)")
    with open(config_path(model_dir), encoding="utf-8") as f:
        objective = json.load(f).get("train", {}).get("objective")
    if objective != "reward_model":
        raise UserError(f"--reward_model {model_dir}: a {objective} run, not a reward_model run")
    if not os.path.isdir(os.path.join(model_dir, "checkpoints")):
        raise UserError(f"--reward_model {model_dir}: no checkpoint yet")


class RewardModelReward:
    """The normalised reward of a --objective=reward_model run's latest checkpoint."""

    def __init__(self, model_dir, batch_size=64):
        from tfpref.evaluation.run import load_run

        check_reward_model_dir(model_dir)
        self.config, self.model, self.objective, _ = load_run(model_dir)
        self.batch_size = batch_size
        self.description = f"reward model {model_dir}"
        self._rewards = tf.function(lambda batch: self.objective.rewards(batch, self.model, False, normalize=True))

    def __call__(self, prompts, completions, finished=None):
        from tfpref.data.preferences import encode_groups

        out = []
        for start in range(0, len(prompts), self.batch_size):
            rows = slice(start, start + self.batch_size)
            arrays = encode_groups(prompts[rows], [(c,) for c in completions[rows]], self.config.data.seq_len)
            count = len(arrays["token_ids"])
            pad = self.batch_size - count  # full batches: one trace
            batch = {k: tf.constant(np.concatenate([v, np.repeat(v[:1], pad, 0)]))
                     for k, v in arrays.items()}
            out.append(self._rewards(batch).numpy()[:count, 0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros([0], np.float32)


def reward_function(reward_model="", scorer="pep8"):
    """A callable (prompts, completions, finished) -> float32 rewards: the reward model if given."""
    return RewardModelReward(reward_model) if reward_model else ScorerReward(scorer)
