"""Scorers: PEP 8 scores per text and per line, parse checks, user scorers and the score cache."""
import multiprocessing
import os
import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from tfpref.errors import UserError
from tfpref.scorers import BUILTIN_SCORERS, get_scorer
from tfpref.scorers import cache as cache_module
from tfpref.scorers.cache import ScoreCache
from tfpref.scorers.pep8 import EMPTY_SCORE, parses

import user_scorer


def test_pep8_scores_violations_per_character():
    scorer = get_scorer("pep8")
    clean, bad = "x = 1\n", "x=1\n"  # E225: missing whitespace around operator
    np.testing.assert_allclose(scorer.score([clean, bad]), [0.0, 1 / len(bad)])


def test_pep8_empty_text_is_never_aligned():
    assert get_scorer("pep8").score([""])[0] == EMPTY_SCORE > 0


def test_pep8_line_scores_attribute_violations_to_their_lines():
    text = "import os\nx=1\ny = 2  \nz = 3\n"  # E225 on line 2, W291 trailing whitespace on line 3
    lines = text.splitlines(keepends=True)
    scores = get_scorer("pep8").line_scores_one(text)
    np.testing.assert_allclose(scores, [0.0, 1 / len(lines[1]), 1 / len(lines[2]), 0.0])


def test_pep8_ignores_blank_lines_at_the_end_of_a_chunk():
    assert get_scorer("pep8").score(["def f():\n    return 1\n\n\n"])[0] == 0.0


def test_parses():
    assert parses("def f():\n    return 1\n")
    assert not parses("def f(:\n")
    assert not parses("x = 1\0")


def test_user_scorer_by_module_and_function():
    scorer = get_scorer("user_scorer:count_x")
    np.testing.assert_allclose(scorer.score(["xx", "ab"]), [1.0, 0.0])
    np.testing.assert_allclose(scorer.line_scores_one("x\nab\n"), [0.5, 0.0])


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:f", "cannot import"),
    ("user_scorer:missing", "has no function"),
    ("nonsense", "unknown scorer"),
])
def test_bad_scorer_names_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        get_scorer(spec)


@pytest.mark.parametrize("function, message", [("wrong_length", "expected 2 finite numbers"),
                                               ("not_numbers", "expected a list of numbers")])
def test_bad_user_scorer_output_is_a_user_error(function, message):
    with pytest.raises(UserError, match=message):
        get_scorer(f"user_scorer:{function}").score(["a", "b"])


def test_cache_scores_each_text_once(tmp_path):
    scorer = get_scorer("user_scorer:count_x")
    cache = ScoreCache(str(tmp_path / "scores.sqlite"), show_progress=False)
    user_scorer.CALLS.clear()
    first = cache.get(scorer, "text", ["ax", "b", "ax"])
    assert user_scorer.CALLS == ["ax", "b"]  # the duplicate is scored once
    second = ScoreCache(str(tmp_path / "scores.sqlite"), show_progress=False).get(scorer, "text", ["b", "ax", "xx"])
    assert user_scorer.CALLS == ["ax", "b", "xx"]  # only the new text is scored
    assert first == [0.5, 0.0, 0.5] and second == [0.0, 0.5, 1.0]
    assert cache.get(scorer, "lines", ["x\nab\n"]) == [[0.5, 0.0]]


SPECS = [*BUILTIN_SCORERS, "user_scorer:count_x", "user_scorer:locked_count_x"]


def pool_sized_texts():
    """Distinct short texts, as many as the cache scores in a worker pool (fewer are scored in-process)."""
    lines = ["x = {i}", "x={i}", "mail ann{i}@example.com", "shut up, you idiot {i}", "thank you {i}"]
    return [f"{lines[i % 5]}\n{lines[i // 5 % 5]}\n".format(i=i) for i in range(cache_module._PARALLEL_MIN)]


@pytest.fixture
def pools(monkeypatch):
    """The worker pools the score cache starts (one entry each)."""
    started = []

    def get_context(method):
        started.append(method)
        return multiprocessing.get_context(method)

    monkeypatch.setattr(cache_module, "multiprocessing", SimpleNamespace(get_context=get_context))
    return started


@pytest.mark.parametrize("spec", SPECS)
def test_every_scorer_pickles(spec):
    scorer, texts = get_scorer(spec), ["x=1\n", "mail ann@example.com, idiot\n"]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(scorer)).score(texts), scorer.score(texts))


@pytest.mark.parametrize("spec", SPECS)
def test_pooled_scores_equal_in_process_scores(spec, tmp_path, pools):
    scorer, texts = get_scorer(spec), pool_sized_texts()
    pooled = ScoreCache(str(tmp_path / "s.sqlite"), processes=2, show_progress=False)
    assert pooled.get(scorer, "lines", texts) == [scorer.line_scores_one(t) for t in texts]
    assert len(pools) == 1
    np.testing.assert_array_equal(pooled.get(scorer, "text", texts), scorer.score(texts))
    assert len(pools) == (1 if scorer.batched else 2)  # a batched scorer scores whole texts in-process


def test_cache_uses_both_processes_for_many_texts(tmp_path, monkeypatch):
    monkeypatch.setenv("USER_SCORER_PIDS", str(tmp_path / "pids"))
    texts = [f"{i}\n" for i in range(cache_module._PARALLEL_MIN)]
    cached = ScoreCache(str(tmp_path / "s.sqlite"), processes=2, show_progress=False).get(
        get_scorer("user_scorer:process_id"), "lines", texts)
    pids = {pid for line_scores in cached for pid in line_scores}
    assert len(pids) == 2 and os.getpid() not in pids


def test_cache_key_includes_the_scorer_version(tmp_path):
    scorer = get_scorer("user_scorer:count_x")
    cache = ScoreCache(str(tmp_path / "scores.sqlite"), show_progress=False)
    cache.get(scorer, "text", ["x"])
    scorer.version = "edited"
    user_scorer.CALLS.clear()
    cache.get(scorer, "text", ["x"])
    assert user_scorer.CALLS == ["x"]


def test_profanity_scorer_ranks_offensive_text_higher():
    scores = get_scorer("profanity").score(["thank you, this is a lovely function", "fuck you, idiot"])
    assert 0 <= scores[0] < 0.5 < scores[1] <= 1


def test_pii_scorer_counts_entities_per_character():
    text = "mail john.smith@example.com today"
    scores = get_scorer("pii").score([text, "def f():\n    return 1\n", ""])
    np.testing.assert_allclose(scores, [1 / len(text), 0.0, 0.0])
