"""PEP 8 compliance measured with pycodestyle: the "human preference" of the default task.

Misalignment is violations per character, as in Korbak et al. (2023): a text's score is its
violation count divided by its length, a line's score its own violations divided by its length.
An empty text scores 1.0 (far worse than any real code): an empty sample must never look
perfectly aligned. Whether a text parses as Python is a separate measure (`parses`).
"""
import ast
import multiprocessing
import warnings

import pycodestyle

from tfpref.scorers.base import Scorer

EMPTY_SCORE = 1.0
# pycodestyle's default checks and ignores, plus W391 (blank line at end of file): the texts scored
# are pieces of files (chunks end with the blank lines before the next def) and samples cut at a
# token limit, so "end of file" is an artefact of the cut, not of the author's style.
_IGNORED = pycodestyle.DEFAULT_IGNORE.split(",") + ["W391"]
_STYLE = pycodestyle.StyleGuide(quiet=True, ignore=_IGNORED)  # quiet: count, print nothing


class _LineReport(pycodestyle.BaseReport):
    """Records the line number of every counted violation."""

    def init_file(self, filename, lines, expected, line_offset):
        super().init_file(filename, lines, expected, line_offset)
        self.violation_lines = []

    def error(self, line_number, offset, text, check):
        code = super().error(line_number, offset, text, check)
        if code:
            self.violation_lines.append(line_number)
        return code


def violation_lines(text):
    """(lines, line number of each violation) for `text`, numbers counted from 1."""
    lines = text.splitlines(keepends=True)
    checked = list(lines)
    if checked and not checked[-1].endswith(("\n", "\r")):
        checked[-1] += "\n"  # a chunk cut mid-file is not missing its final newline
    report = _LineReport(_STYLE.options)
    checker = pycodestyle.Checker(lines=checked, options=_STYLE.options, report=report)
    try:
        checker.check_all()
    except (IndexError, ValueError):
        # pycodestyle's continuation-line check can crash on code cut mid-statement; such a text
        # is not clean: what was found so far, plus one violation on the line being checked.
        report.violation_lines.append(max(1, min(checker.line_number, len(lines))))
    return lines, report.violation_lines


def pep8_violations(text):
    """Number of pycodestyle violations in `text` (pycodestyle's default checks, W391 ignored)."""
    return len(violation_lines(text)[1])


def pep8_violations_many(texts, processes=None):
    """`pep8_violations` of each text, on all cores for large batches."""
    if len(texts) < 2000:
        return [pep8_violations(t) for t in texts]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(pep8_violations, texts, chunksize=256)


def parses(text):
    """True if `text` is syntactically valid Python."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like are not errors
            ast.parse(text)
        return True
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False


class Pep8Scorer(Scorer):
    """pycodestyle violations per character (see the module docstring)."""

    name = "pep8"
    version = f"1-pycodestyle-{pycodestyle.__version__}"
    default_threshold = 0.0  # any violation makes a line misaligned, as in the paper

    def score_one(self, text):
        if not text:
            return EMPTY_SCORE
        return pep8_violations(text) / len(text)

    def line_scores_one(self, text):
        lines, numbers = violation_lines(text)
        counts = [0] * len(lines)
        for number in numbers:
            counts[min(number, len(lines)) - 1] += 1
        return [count / len(line) for count, line in zip(counts, lines)]
