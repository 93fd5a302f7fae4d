"""Running a function over rows in batches of one fixed size.

A compiled function traces once per input shape: a last, smaller batch would cost a second trace
(and under XLA a second compilation). So every batch here holds exactly `batch_size` rows; the last
one is filled up by wrapping around to the first rows, and what the function returns for those
extra rows is dropped. Callers that add up sums over a batch, where extra rows would count, ask for
`full=False` instead.

Example:
    >>> rewards = map_rows(lambda b: reward_model(b["token_ids"], b["padding_mask"]), arrays, 64)
"""
import numpy as np


def row_batches(num_rows, batch_size, full=True):
    """Yield (row indices int64 [batch_size], count of real rows) covering rows 0..num_rows-1 in
    order; with `full=False` the last batch is just the rows left."""
    for start in range(0, num_rows, batch_size):
        count = min(batch_size, num_rows - start)
        size = batch_size if full else count
        yield np.arange(start, start + size, dtype=np.int64) % num_rows, count


def map_rows(function, rows, batch_size, num_rows=None):
    """Concatenated outputs of `function(batch)` over every row, in full batches of `batch_size`.

    Args:
        function: batch -> a tensor or array [batch, ...], or a tuple/dict of them.
        rows: a dict of arrays with a leading row axis, or a function (row indices) -> batch.
        num_rows: how many rows there are, when `rows` is a function.
    Returns:
        NumPy arrays of the same structure, [num_rows, ...].
    """
    gather = rows if callable(rows) else (lambda indices: {name: values[indices] for name, values in rows.items()})
    if not callable(rows):
        num_rows = len(next(iter(rows.values())))
    outputs = []
    for indices, count in row_batches(num_rows, batch_size):
        out = function(gather(indices))
        outputs.append(_map(lambda x: np.asarray(x)[:count], out))
    if not outputs:
        return None
    first = outputs[0]
    if isinstance(first, dict):
        return {name: np.concatenate([o[name] for o in outputs]) for name in first}
    if isinstance(first, tuple):
        return tuple(np.concatenate([o[i] for o in outputs]) for i in range(len(first)))
    return np.concatenate(outputs)


def _map(function, structure):
    if isinstance(structure, dict):
        return {name: function(value) for name, value in structure.items()}
    if isinstance(structure, tuple):
        return tuple(function(value) for value in structure)
    return function(structure)
