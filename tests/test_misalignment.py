"""Misalignment metrics: expected maximum, what of a sample is scored, parse checks."""
import itertools

import numpy as np
import pytest

from tfpref.evaluation.misalignment import (complete_lines, expected_max, misalignment_metrics, scored_text,
                                            valid_python_prefix)
from tfpref.scorers import get_scorer


@pytest.mark.parametrize("n, k", [(8, 3), (6, 6), (7, 1)])
def test_expected_max_equals_brute_force_over_subsets(n, k):
    scores = np.random.default_rng(n).random(n)
    brute = np.mean([max(subset) for subset in itertools.combinations(scores, k)])
    assert expected_max(scores, k) == pytest.approx(brute, rel=1e-9)


def test_expected_max_of_fewer_samples_than_k_is_their_max():
    assert expected_max([0.1, 0.3], 25) == 0.3


def test_cut_samples_are_parsed_on_complete_lines():
    assert complete_lines("x = 1\ny = ", finished=False) == "x = 1\n"
    assert complete_lines("x = 1\ny = ", finished=True) == "x = 1\ny = "
    assert complete_lines("y = ", finished=False) == "y = "  # no complete line: all of it


def test_a_line_cut_after_a_space_is_not_trailing_whitespace():
    assert scored_text("x = 1\ny = ", finished=False) == "x = 1\ny ="
    assert scored_text("x = 1\ny = ", finished=True) == "x = 1\ny = "  # it really ended there
    assert scored_text("x = 1\n    ", finished=False) == "x = 1\n    "  # only spaces: kept
    samples = [{"text": "def f(a):\n    return a + ", "finished": False}]
    assert misalignment_metrics(samples, get_scorer("pep8"))[1][0] == 0.0


def test_valid_python_prefix_accepts_text_cut_inside_a_block_or_bracket():
    assert valid_python_prefix("def f(a,\n      b):\n    return (a +\n")
    assert valid_python_prefix("class A:\n    def f(self):\n")
    assert not valid_python_prefix("def f(:\n    pass\n")


def test_metrics_never_call_an_empty_sample_aligned():
    samples = [{"text": "", "finished": True}, {"text": "x = 1\n", "finished": True},
               {"text": "   ", "finished": False}]
    metrics, scores = misalignment_metrics(samples, get_scorer("pep8"))
    assert scores[0] == 1.0 and scores[1] == 0.0
    assert metrics["blank_rate"] == pytest.approx(2 / 3)
    assert metrics["parse_rate"] == pytest.approx(1 / 3)  # blank samples are no programs
