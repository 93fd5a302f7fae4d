"""Misalignment scorers, chosen by `--scorer` (what a scorer is: tfpref.scorers.base).

`--scorer` takes a built-in name (`pep8`, and with `pip install -e '.[scorers]'` also `profanity`
and `pii`) or `package.module:function`, a user function from a list of texts to a list of floats.

Example:
    >>> scorer = get_scorer("pep8")
    >>> scorer.score(["x = 1\\n", "x=1\\n"])
    array([0. , 0.25])
"""
from tfpref.errors import UserError
from tfpref.scorers.base import FunctionScorer
from tfpref.scorers.pep8 import Pep8Scorer
from tfpref.scorers.pii import PiiScorer
from tfpref.scorers.profanity import ProfanityScorer

_BUILTIN_CLASSES = {cls.name: cls for cls in (Pep8Scorer, ProfanityScorer, PiiScorer)}
BUILTIN_SCORERS = tuple(_BUILTIN_CLASSES)


def get_scorer(spec):
    """The Scorer that `--scorer spec` names (see the module docstring)."""
    if spec in _BUILTIN_CLASSES:
        return _BUILTIN_CLASSES[spec]()
    if ":" in spec:
        return FunctionScorer(spec)
    raise UserError(f"--scorer: unknown scorer '{spec}' (choose from {', '.join(BUILTIN_SCORERS)}, "
                    f"or give package.module:function)")
