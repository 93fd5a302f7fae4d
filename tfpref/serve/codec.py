"""TensorFlow Serving's JSON for predict: request bodies to NumPy inputs, outputs back to JSON.

Two request formats (TensorFlow Serving's REST API):
    row:      {"signature_name": "generate", "instances": [{"prompts": "def f(", "max_new_tokens": 64,
               "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}, ...]}
              one object per row (or bare values when the signature has one input); a scalar input
              (max_new_tokens, temperature, top_k, top_p, seed) is given in every instance and must be
              equal across them, since it is one value for the whole call. Answered with
              {"predictions": [{"completions": ..., "num_tokens": ..., ...}, ...]}, one object per row
              (bare values when the signature has one output).
    columnar: {"signature_name": "generate", "inputs": {"prompts": ["def f("], "max_new_tokens": 64, ...}}
              the tensors themselves; answered with {"outputs": {"completions": [...], ...}}.

Strings are JSON strings (sent as UTF-8), or TensorFlow Serving's {"b64": "<base64>"} for bytes.
Output strings are the model's raw bytes decoded as UTF-8 with errors="replace" (a completion may
stop inside a multi-byte character). A string matrix (chat's roles and contents) may have rows of
different lengths: they are padded with "" (role "" is the export's padding role). Floats may be
NaN or Infinity, as TensorFlow Serving writes them.
"""
import base64
import binascii
import json

import numpy as np
import tensorflow as tf

from tfpref.serve.errors import BadRequest

_BODY_KEYS = ("signature_name", "instances", "inputs")


def parse_body(body):
    """The request body as a JSON object; BadRequest if it is not one."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"the request body is not JSON: {e}") from None
    if not isinstance(payload, dict):
        raise BadRequest('the request body must be a JSON object, e.g. {"inputs": {...}}')
    unknown = sorted(set(payload) - set(_BODY_KEYS))
    if unknown:
        raise BadRequest(f"unknown field '{unknown[0]}' in the request (expected {', '.join(_BODY_KEYS)})")
    name = payload.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise BadRequest("signature_name must be a string")
    if ("instances" in payload) == ("inputs" in payload):
        raise BadRequest('give either "instances" (row format) or "inputs" (columnar format), not both or neither')
    return payload


def _string(value, what):
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape, e.g. "\\ud800"
            raise BadRequest(f"{what}: not valid Unicode") from None
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{what}: invalid base64 in {{\"b64\": ...}}") from None
    raise BadRequest(f"{what}: expected a string, got {json.dumps(value)[:40]}")


def _leaf_converter(dtype, what):
    """(A function that checks one JSON value against `dtype` and returns it as a Python value,
    what such a value is called)."""
    if dtype == tf.string:
        return (lambda value: _string(value, what)), "a string"
    if dtype == tf.bool:
        def boolean(value):
            if not isinstance(value, bool):
                raise BadRequest(f"{what}: expected true or false, got {json.dumps(value)[:40]}")
            return value
        return boolean, "true or false"
    if dtype.is_integer:
        low, high = dtype.min, dtype.max

        def integer(value):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequest(f"{what}: expected an integer, got {json.dumps(value)[:40]}")
            if not low <= value <= high:
                raise BadRequest(f"{what}: {value} is out of range for {dtype.name}")
            return value
        return integer, "an integer"
    if dtype.is_floating:
        def number(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadRequest(f"{what}: expected a number, got {json.dumps(value)[:40]}")
            try:
                return float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise BadRequest(f"{what}: {str(value)[:20]}... is out of range for {dtype.name}") from None
        return number, "a number"
    raise BadRequest(f"{what}: inputs of type {dtype.name} are not supported over JSON")


def _nested(value, depth, converter, what):
    """`value`, lists `depth` deep, with every leaf converted."""
    convert, kind = converter
    if depth == 0:
        if isinstance(value, list):
            raise BadRequest(f"{what}: expected {kind}, got a list")
        return convert(value)
    if not isinstance(value, list):
        raise BadRequest(f"{what}: expected a list {depth} level{'s' if depth > 1 else ''} deep, got "
                         f"{json.dumps(value)[:40]}")
    return [_nested(item, depth - 1, converter, what) for item in value]


def _depth(value):
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    return depth


def to_array(value, spec, what):
    """The JSON `value` of an input as a NumPy array of its spec's dtype and rank (strings as an
    object array of bytes); BadRequest naming `what` if it does not fit."""
    rank = spec.shape.rank if spec.shape.rank is not None else _depth(value)
    nested = _nested(value, rank, _leaf_converter(spec.dtype, what), what)
    if spec.dtype == tf.string and rank == 2:  # message lists of different lengths: "" pads them
        width = max((len(row) for row in nested), default=0)
        array = np.full((len(nested), width), b"", dtype=object)
        for i, row in enumerate(nested):
            array[i, :len(row)] = row
    elif spec.dtype == tf.string and rank == 1:
        array = np.empty(len(nested), dtype=object)
        array[:] = nested
    else:
        try:
            array = np.array(nested, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
        except ValueError:
            raise BadRequest(f"{what}: lists of different lengths (a tensor must be rectangular)") from None
        if array.ndim != rank:
            raise BadRequest(f"{what}: lists of different lengths (a tensor must be rectangular)")
    if spec.shape.rank is not None:
        for axis, (size, expected) in enumerate(zip(array.shape, spec.shape.as_list())):
            if expected is not None and size != expected:
                raise BadRequest(f"{what}: {size} values along axis {axis}, the signature takes {expected}")
    return array


def _check_names(given, specs, signature, where):
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise BadRequest(f"{where}unknown input '{unknown[0]}' (signature {signature} takes "
                         f"{', '.join(sorted(specs))})")
    missing = sorted(set(specs) - set(given))
    if missing:
        raise BadRequest(f"{where}missing input '{missing[0]}' (signature {signature} takes "
                         f"{', '.join(sorted(specs))})")


def request_inputs(payload, specs, signature):
    """({input name: NumPy array}, row format?) of a parsed predict request for a signature whose
    inputs are `specs` ({name: tf.TensorSpec})."""
    if "inputs" in payload:
        columns = payload["inputs"]
        if not isinstance(columns, dict):
            if len(specs) != 1:
                raise BadRequest(f'"inputs" must be an object of named inputs: signature {signature} takes '
                                 f'{", ".join(sorted(specs))}')
            columns = {next(iter(specs)): columns}
        _check_names(columns, specs, signature, "")
        return {name: to_array(columns[name], specs[name], f"input '{name}'") for name in specs}, False
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list, one item per row')
    if not all(isinstance(instance, dict) for instance in instances):
        if len(specs) != 1:
            raise BadRequest(f'each of "instances" must be an object of named inputs: signature {signature} takes '
                             f'{", ".join(sorted(specs))}')
        instances = [{next(iter(specs)): instance} for instance in instances]
    for row, instance in enumerate(instances):
        _check_names(instance, specs, signature, f"instance {row}: ")
    inputs = {}
    for name, spec in specs.items():
        if spec.shape.rank == 0:  # one value per call: every instance repeats it
            values = [to_array(instance[name], spec, f"instance {row}: input '{name}'").item()
                      for row, instance in enumerate(instances)]
            if any(value != values[0] for value in values):
                raise BadRequest(f"input '{name}' differs between instances ({values[0]!r} and "
                                 f"{next(v for v in values if v != values[0])!r}): it is one value for the whole "
                                 f"request; send requests with other values separately")
            inputs[name] = to_array(instances[0][name], spec, f"input '{name}'")
        else:
            inputs[name] = to_array([instance[name] for instance in instances], spec, f"input '{name}'")
    return inputs, True


def _json_value(array):
    values = array.tolist()
    if array.dtype == object:
        return _decoded(values)
    return values


def _decoded(values):
    if isinstance(values, list):
        return [_decoded(value) for value in values]
    return values.decode("utf-8", "replace") if isinstance(values, bytes) else values


def response(outputs, row_format):
    """The JSON object answering a predict request: {"predictions": rows} or {"outputs": tensors}."""
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": _json_value(next(iter(outputs.values())))}
        return {"outputs": {name: _json_value(value) for name, value in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": _json_value(next(iter(outputs.values())))}
    unbatched = [name for name, value in outputs.items() if value.ndim == 0]
    if unbatched:
        raise BadRequest(f"output '{unbatched[0]}' has no rows to answer instances with: use the columnar format "
                         f'("inputs")')
    columns = {name: _json_value(value) for name, value in outputs.items()}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{name: column[row] for name, column in columns.items()} for row in range(rows)]}
