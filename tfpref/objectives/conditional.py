"""Conditional training: a control token before each segment says whether it is aligned.

The model learns p(text | <|aligned|>) and p(text | <|misaligned|>) from all of the data; at
generation it is conditioned on <|aligned|>. Like the paper, it is also trained to predict the
control tokens (so at line granularity it emits one at each line start during generation, where
the opposite token is banned), and a fraction of training segments (--drop_control_fraction)
gets no control token so unconditional text stays in distribution.
"""
import numpy as np

from tfpref.data.tokenizers import control_tokens_for
from tfpref.objectives.mle import MleObjective


def control_ids(scores, threshold, control_tokens):
    """<|aligned|> where score <= threshold, else <|misaligned|>, as ids of `control_tokens` ({name: id},
    the run's vocabulary)."""
    return np.where(np.asarray(scores) <= threshold, control_tokens["<|aligned|>"],
                    control_tokens["<|misaligned|>"]).astype(np.int32)


class ConditionalObjective(MleObjective):
    """loss = next-token cross-entropy on control-token-prefixed segments (control tokens included)."""

    name = "conditional"
    needs_scores = True
    uses_threshold = True

    @classmethod
    def segment_prefixes(cls, config, scores, rng, training):
        ids = control_ids(scores, config.feedback.threshold, control_tokens_for(config.model))
        if training and config.feedback.drop_control_fraction > 0:
            ids[rng.random(len(ids)) < config.feedback.drop_control_fraction] = -1
        return ids
