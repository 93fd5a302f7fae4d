"""Running a function over rows in full batches of one size."""
import numpy as np

from tfpref.data.batching import map_rows, row_batches


def test_row_batches_are_full_and_wrap_around_or_end_short():
    full = list(row_batches(5, 2))
    assert [indices.tolist() for indices, _ in full] == [[0, 1], [2, 3], [4, 0]]
    assert [count for _, count in full] == [2, 2, 1]
    assert [indices.tolist() for indices, _ in row_batches(5, 2, full=False)] == [[0, 1], [2, 3], [4]]


def test_map_rows_sees_one_shape_and_drops_the_extra_rows():
    arrays = {"x": np.arange(7.0), "y": np.arange(7) * 2}
    shapes = set()

    def function(batch):
        shapes.add(batch["x"].shape)
        return {"sum": batch["x"] + batch["y"]}, batch["x"] * 10

    out = map_rows(lambda b: function(b)[0], arrays, batch_size=3)
    np.testing.assert_array_equal(out["sum"], np.arange(7) * 3)
    assert shapes == {(3,)}
    rows = np.array([4, 4, 2])  # a gather function instead of arrays
    np.testing.assert_array_equal(map_rows(lambda b: b * 10, lambda i: rows[i], 2, num_rows=3), [40, 40, 20])
