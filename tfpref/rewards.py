"""Rewards of (prompt, completion) pairs: from a trained reward model run, or minus a scorer's score.

Example:
    >>> reward = reward_function(reward_model="logs/rm")       # or reward_function(scorer="pep8")
    >>> reward(["def f(x):\\n"], ["    return x\\n"], finished=[True])   # array([0.73], float32)
"""
import numpy as np
import tensorflow as tf

from tfpref.data.batching import map_rows
from tfpref.data.preferences import encode_groups
from tfpref.data.tokenizers import tokenizer_for
from tfpref.runs import check_reward_model_dir, load_run
from tfpref.scorers import get_scorer
from tfpref.scorers.base import scored_text


class ScorerReward:
    """reward = -score of prompt + completion (a cut-off last line is scored without its trailing
    spaces, as in the misalignment evaluation)."""

    def __init__(self, scorer_name):
        self.scorer = get_scorer(scorer_name)
        self.description = f"-{scorer_name} score"

    def __call__(self, prompts, completions, finished):
        # A reply to a chat prompt is scored alone: the prompt's messages are not text to judge.
        texts = [scored_text((p if isinstance(p, str) else "") + c, f)
                 for p, c, f in zip(prompts, completions, finished)]
        return -np.asarray(self.scorer.score(texts), np.float32)


class RewardModelReward:
    """The normalised reward of a --objective=reward_model run's latest checkpoint."""

    def __init__(self, model_dir, batch_size=64):
        check_reward_model_dir(model_dir)
        self.config, self.model, _ = load_run(model_dir, flag="--reward_model")
        self.tokenizer = tokenizer_for(self.config)  # a keras-hub preset's, or bytes
        self.batch_size = batch_size
        self.description = f"reward model {model_dir}"
        self._rewards = tf.function(lambda batch: self.model.group_rewards(
            batch["token_ids"], batch["padding_mask"], batch["completion_mask"])[:, 0])

    def __call__(self, prompts, completions, finished=None):
        if not len(prompts):
            return np.zeros([0], np.float32)
        arrays = encode_groups(prompts, [(c,) for c in completions], self.config.data.seq_len,
                               self.tokenizer)
        names = ("token_ids", "padding_mask", "completion_mask")
        return map_rows(self._rewards, {name: arrays[name] for name in names}, self.batch_size).astype(np.float32)


def reward_function(reward_model="", scorer="pep8"):
    """A callable (prompts, completions, finished) -> float32 rewards: the reward model if given."""
    return RewardModelReward(reward_model) if reward_model else ScorerReward(scorer)
