"""The score that separates aligned from misaligned segments, whatever the scorer.

A segment is aligned when its score is at most the threshold. The threshold comes from, in order:
  * `--threshold_percentile P`: the score above which P% of the training segments lie, as in Korbak
    et al. (2023)'s configurations (`percentile_threshold`);
  * `--threshold T`, when T >= 0;
  * the scorer's own `default_threshold`: 0 for a count of violations (pep8, pii), 0.5 for a
    classifier's probability (profanity).
A run resolves it once from its training split and stores it in config.json, so evaluation and a
resumed run use the same value. Conditional and unlikelihood training learn from the contrast
between the two kinds of segment, so they refuse training data with almost none of one kind.
"""
import numpy as np

from tfpref.errors import UserError

MIN_ALIGNED_FRACTION = 0.01
MAX_ALIGNED_FRACTION = 0.99


def percentile_threshold(scores, misaligned_percent):
    """The score that leaves `misaligned_percent`% of `scores` above it (NumPy's linear percentile of
    the other 100 - P%; ties at the threshold count as aligned)."""
    return float(np.percentile(np.asarray(scores, np.float64), 100.0 - misaligned_percent))


def resolve_threshold(feedback, scorer, train_scores=None):
    """(threshold, where it came from) for a FeedbackConfig; `train_scores` (every training segment's
    score) are needed for --threshold_percentile only."""
    if feedback.threshold_percentile > 0:
        if train_scores is None or not len(train_scores):
            raise UserError("--threshold_percentile: no training segments to take a percentile of")
        return (percentile_threshold(train_scores, feedback.threshold_percentile),
                f"--threshold_percentile {feedback.threshold_percentile:g}")
    if feedback.threshold >= 0:
        return float(feedback.threshold), "--threshold"
    return float(scorer.default_threshold), f"the {scorer.name} scorer's default"


def aligned_fraction(scores, threshold):
    """Fraction of `scores` at most `threshold`."""
    scores = np.asarray(scores, np.float64)
    return float(np.mean(scores <= threshold)) if len(scores) else 0.0


def check_aligned_fraction(objective, scores, threshold, source):
    """Refuse training `objective` when the threshold leaves under 1% or over 99% of the training
    segments aligned: control tokens or unlikelihood would then have one kind of text to learn from."""
    fraction = aligned_fraction(scores, threshold)
    if not MIN_ALIGNED_FRACTION <= fraction <= MAX_ALIGNED_FRACTION:
        raise UserError(f"--objective {objective}: {fraction:.2%} of the {len(scores)} training segments score at "
                        f"most the threshold {threshold:.6g} ({source}), so there is nearly nothing to contrast; "
                        f"give --threshold_percentile (e.g. 10: the worst 10% of segments are misaligned) or a "
                        f"--threshold between the scores")
    return fraction
