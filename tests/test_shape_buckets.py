"""The export's shape buckets: powers of two with a floor and a cap, never below the value."""
import numpy as np
import pytest

from tfpref.training.shape_buckets import bucket, pad_columns, pad_rows


@pytest.mark.parametrize("n,minimum,maximum,expected", [
    (1, 1, None, 1), (3, 1, None, 4), (8, 1, None, 8), (9, 1, None, 16),
    (5, 16, None, 16), (37, 16, 2048, 64), (1500, 16, 2048, 2048), (1500, 16, 1024, 1500), (2, 16, 8, 8)])
def test_bucket(n, minimum, maximum, expected):
    assert int(bucket(n, minimum, maximum)) == expected


def test_padding_keeps_the_rows_and_adds_masked_room():
    ids = np.array([[5, 6], [7, 8], [9, 10]], np.int32)
    np.testing.assert_array_equal(pad_rows(ids, 4), [[5, 6], [7, 8], [9, 10], [5, 6]])
    np.testing.assert_array_equal(pad_rows(np.array([3, 1]), 4), [3, 1, 3, 3])
    np.testing.assert_array_equal(pad_columns(ids[:1], 4, 0), [[5, 6, 0, 0]])
    np.testing.assert_array_equal(pad_columns(ids[:1], 4, 0, left=True), [[0, 0, 5, 6]])
