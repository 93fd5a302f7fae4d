"""What a scorer is: the base class, user function scorers, optional extras, and what of a sample is scored.

A scorer measures *misalignment*: one float per text, lower is better, 0 is perfectly aligned.
Training objectives also need scores per segment; `line_scores_one` gives one per line of a text,
computed with the whole text as context (a PEP 8 violation such as "expected 2 blank lines" is
only visible in context), so lines can be scored without being cut out first.

Scorers are pickled into the score cache's worker processes, so they hold no modules or other
unpicklable state (see `tfpref.scorers.cache`). `tfpref.scorers.get_scorer` chooses one by `--scorer`.
"""
import hashlib
import importlib
import inspect

import numpy as np

from tfpref.errors import UserError


def scored_text(text, finished):
    """What of a sample is scored: all of it, without the spaces where a cut-off line was cut.

    Scoring only complete lines would divide by a few bytes when the first line is the cut one;
    keeping the whole sample keeps every sample's denominator near --max_new_tokens. A line that
    is nothing but whitespace is left alone: a model that emits only spaces did emit them.
    """
    cut = text.rfind("\n") + 1
    last = text[cut:]
    if finished or not last.strip():
        return text
    return text[:cut] + last.rstrip(" \t")


class Scorer:
    """Base class: subclasses set `name` and `version` and implement `score_one`.

    `version` is part of every cache key: change it whenever the scores a scorer gives change.
    """

    name = ""
    version = "1"
    batched = False  # True: `score` of many texts at once is much faster than one by one
    # The score above which a text (or segment) is misaligned when no --threshold is given: what the
    # scores mean decides it (0 for a count of violations, 0.5 for a classifier's probability).
    default_threshold = 0.0

    def score_one(self, text):
        raise NotImplementedError

    def line_scores_one(self, text):
        """Misalignment of each line of `text.splitlines(keepends=True)`; default: each line alone."""
        return [self.score_one(line) for line in text.splitlines(keepends=True)]

    def score(self, texts):
        """float64 [len(texts)] misalignment of each text."""
        return np.array([self.score_one(t) for t in texts], np.float64)


class FunctionScorer(Scorer):
    """A user's `function(list of texts) -> list of floats`, loaded from `package.module:function`.

    The cache version is a hash of the function's source, so editing it invalidates old scores. The
    function may declare its scores' default threshold as an attribute, `function.default_threshold =
    0.5` (a probability); without one it is 0, as for a count of violations.
    """

    def __init__(self, spec):
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UserError(f"--scorer {spec}: cannot import {module_name} ({e})") from None
        function = getattr(module, attribute, None)
        if not callable(function):
            raise UserError(f"--scorer {spec}: {module_name} has no function '{attribute}'")
        self.spec, self.function, self.name, self.batched = spec, function, spec, True
        self.default_threshold = _declared_threshold(spec, function)
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            source = spec
        self.version = hashlib.sha1(source.encode("utf-8")).hexdigest()[:12]

    def __reduce__(self):
        # Pickled into pool workers by name: the function need not pickle (a callable object may hold a model).
        return FunctionScorer, (self.spec,)

    def score(self, texts):
        values = self.function(list(texts))
        try:
            scores = np.asarray(values, np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise UserError(f"--scorer {self.spec}: returned {type(values).__name__}, "
                            f"expected a list of numbers") from None
        if scores.shape != (len(texts),) or not np.all(np.isfinite(scores)):
            raise UserError(f"--scorer {self.spec}: expected {len(texts)} finite numbers, "
                            f"got {scores.shape[0]}{'' if np.all(np.isfinite(scores)) else ' (not all finite)'}")
        return scores

    def score_one(self, text):
        return float(self.score([text])[0])

    def line_scores_one(self, text):
        lines = text.splitlines(keepends=True)
        return list(self.score(lines)) if lines else []


def _declared_threshold(spec, function):
    value = getattr(function, "default_threshold", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
        raise UserError(f"--scorer {spec}: default_threshold must be a non-negative number, got {value!r}")
    return float(value)


def require_extra(module_name, package):
    """Import `module_name` of an optional extra, or say how to install it."""
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"--scorer needs {package}: pip install -e '.[scorers]'") from None

