"""Filtering: maximum likelihood on the training segments the scorer finds aligned enough."""
import numpy as np

from tfpref.objectives.mle import MleObjective


def filter_threshold(config, scores):
    """--filter_percentile of the training scores when given, else --filter_threshold."""
    feedback = config.feedback
    if feedback.filter_percentile > 0:
        return float(np.percentile(scores, feedback.filter_percentile))
    return feedback.filter_threshold


class FilterObjective(MleObjective):
    """MLE after dropping training segments that score above the threshold.

    Validation keeps every segment, so held-out losses stay comparable across objectives.
    """

    name = "filter"
    needs_scores = True

    @classmethod
    def select_segments(cls, config, scores):
        return scores <= filter_threshold(config, scores)
