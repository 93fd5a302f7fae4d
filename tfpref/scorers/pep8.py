"""PEP 8 compliance measured with pycodestyle: the "human preference" of the default task."""
import multiprocessing

import pycodestyle

_STYLE = pycodestyle.StyleGuide(quiet=True)  # quiet: count violations, print nothing


def pep8_violations(text):
    """Number of pycodestyle violations in `text` (pycodestyle's default checks and ignores)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"  # a chunk cut mid-file is not missing its final newline
    checker = pycodestyle.Checker(lines=lines, options=_STYLE.options)
    try:
        return checker.check_all()
    except (IndexError, ValueError):
        # pycodestyle's continuation-line check can crash on code cut mid-statement; such a text
        # is not clean, so count what was found so far plus one.
        return checker.report.file_errors + 1


def pep8_violations_many(texts, processes=None):
    """`pep8_violations` of each text, on all cores for large batches."""
    if len(texts) < 2000:
        return [pep8_violations(t) for t in texts]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return pool.map(pep8_violations, texts, chunksize=256)
