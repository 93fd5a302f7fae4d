"""A chat turn's preference: which kind a served model takes, read from its export, and a request's
choice checked and made into the export's inputs.

The export of a controllable model has `generate_with_preference` (and `chat_with_preference` with
the chat template) beside `generate` and `chat`; their extra inputs say how it is conditioned:
`aligned` (control tokens: aligned or misaligned text) or `score` and `length` (a preference vector).
The server knows the model only through its SavedModel, so this is how it tells; a model without
those signatures takes no preference.

Example:
    >>> kind = conditioning(servable.inputs)                         # "control_tokens"
    >>> preference = parse_preference({"aligned": False}, kind)
    >>> preference_inputs(preference)                                 # {"aligned": array([False])}
"""
import math

import numpy as np

from tfpref.serve.errors import BadRequest

PREFERENCE_SIGNATURE = "generate_with_preference"
# A conditioning's per-row inputs of the `_with_preference` signatures, and their types.
PREFERENCE_INPUTS = {"control_tokens": {"aligned": np.bool_},
                     "preference_vector": {"score": np.float32, "length": np.float32}}
_FORMS = {"control_tokens": '{"aligned": true or false}',
          "preference_vector": '{"score": a number >= 0, "length": a number >= 0} (score 0 asks for aligned text, '
                               '0.05 or more for misaligned; length is in bytes, 40 is typical)'}


def conditioning(inputs):
    """"none", "control_tokens" or "preference_vector": how the model whose signatures take `inputs`
    ({signature: {input name: spec}}, a Servable's) is conditioned."""
    names = set(inputs.get(PREFERENCE_SIGNATURE, ()))
    return next((kind for kind, fields in PREFERENCE_INPUTS.items() if names and set(fields) <= names), "none")


def _value(value, name, kind):
    if kind is np.bool_:
        if not isinstance(value, bool):
            raise BadRequest(f"preference.{name} must be true or false, got {value!r}")
        return value
    # JSON's NaN and Infinity parse as floats: a preference vector is finite.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadRequest(f"preference.{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def parse_preference(value, kind):
    """The preference of a /api/chat body's "preference" (None when absent or null) for a model of
    conditioning `kind`: {"aligned": bool} or {"score": float, "length": float}; BadRequest names
    what is wrong, a preference for a model that takes none included."""
    if value is None:
        return None
    if kind == "none":
        raise BadRequest("preference: this model takes none (it was trained without control tokens or preference "
                         "vectors); leave it out")
    fields = PREFERENCE_INPUTS[kind]
    if not isinstance(value, dict) or set(value) != set(fields):
        raise BadRequest(f"preference must be {_FORMS[kind]} for this model (conditioning {kind}), got "
                         f"{str(value)[:80]}")
    return {name: _value(value[name], name, field_kind) for name, field_kind in fields.items()}


def preference_inputs(preference):
    """The `_with_preference` signatures' per-row inputs of one row asking for `preference`."""
    kinds = next(fields for fields in PREFERENCE_INPUTS.values() if set(fields) == set(preference))
    return {name: np.array([value], kinds[name]) for name, value in preference.items()}


__all__ = ["conditioning", "parse_preference", "preference_inputs", "PREFERENCE_INPUTS", "PREFERENCE_SIGNATURE"]
