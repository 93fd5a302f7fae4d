import numpy as np
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.data.pipeline import (ArrayData, batch_order, build_token_data, distributed_batches, distributed_dataset,
                                  make_dataset, replica_shares, sequential_order)
from tfpref.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, ByteTokenizer

CHUNKS = ["def a():\n    return 1\n", "x = 'é'\n", "class B:\n    pass\n" * 3]


def test_packed_windows_cover_every_token_once_as_a_target():
    data = build_token_data(CHUNKS, seq_len=8, packed=True)
    examples = [data.stream[s:s + n] for s, n in zip(data.starts, data.lengths)]
    targets = np.concatenate([e[1:] for e in examples])
    np.testing.assert_array_equal(targets, data.stream[1:1 + len(targets)])
    assert len(data.stream) - 1 - len(targets) < 8  # only the ragged tail is dropped
    assert ByteTokenizer().decode(data.stream) == "".join(CHUNKS)
    assert (data.stream == BOS_ID).sum() == (data.stream == EOS_ID).sum() == len(CHUNKS)


def test_dataset_pads_and_masks_short_examples():
    data = build_token_data(CHUNKS, seq_len=20, packed=False)
    shares = np.arange(3).reshape(1, 1, 3)
    batch = next(iter(make_dataset(data, shares, shares + 100)))
    np.testing.assert_array_equal(batch["sample_index"].numpy()[0], [100, 101, 102])
    ids, mask = batch["token_ids"].numpy()[0], batch["padding_mask"].numpy()[0]
    tokenizer = ByteTokenizer()
    for row, (chunk, row_ids, row_mask) in enumerate(zip(CHUNKS, ids, mask)):
        expected = tokenizer.encode(chunk, add_bos=True, add_eos=True)[:21]
        np.testing.assert_array_equal(row_ids[row_mask], expected)
        assert (row_ids[~row_mask] == PAD_ID).all()


def test_batch_order_is_seeded_and_a_longer_run_extends_it():
    short = batch_order(num_examples=10, steps=4, global_batch=4, seed=3)
    long = batch_order(num_examples=10, steps=9, global_batch=4, seed=3)
    np.testing.assert_array_equal(short, long[:4])
    assert not np.array_equal(short, batch_order(10, 4, 4, seed=4))
    first_epoch = long.reshape(-1)[:10]
    assert sorted(first_epoch) == list(range(10))  # every example once per epoch


def test_replica_shares_partition_each_global_batch():
    order = np.arange(3 * 8).reshape(3, 8)
    for replicas, pipelines, accum in [(1, 1, 1), (2, 1, 1), (2, 2, 2), (4, 2, 1)]:
        shares = [replica_shares(order, accum, replicas, p, pipelines) for p in range(pipelines)]
        per_step = [np.concatenate([s.reshape(3, -1)[step] for s in shares]) for step in range(3)]
        for step in range(3):
            assert sorted(per_step[step]) == list(order[step])


def test_sequential_order_repeats_a_small_split():
    np.testing.assert_array_equal(sequential_order(3, steps=2, global_batch=4), [[0, 1, 2, 0], [1, 2, 0, 1]])


def test_array_data_batches_gathered_in_numpy_are_the_tf_data_ones():
    data = ArrayData({"token_ids": np.arange(60, dtype=np.int32).reshape(10, 6),
                      "reward": np.linspace(-1.0, 1.0, 10, dtype=np.float32)}, seq_len=5)
    order = batch_order(data.num_examples, steps=3, global_batch=4, seed=1)
    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0"])):
        ours = list(distributed_batches(strategy, data, order, grad_accum=2, first_step=5))
        pipeline = list(distributed_dataset(strategy, data, order, grad_accum=2, first_step=5))
        assert len(ours) == len(pipeline) == 3
        for mine, theirs in zip(ours, pipeline):
            (mine,), (theirs,) = strategy.experimental_local_results(mine), strategy.experimental_local_results(theirs)
            assert mine.keys() == theirs.keys() == {"token_ids", "reward", "sample_index"}
            for name in mine:
                assert mine[name].dtype == theirs[name].dtype and mine[name].shape[:2] == (2, 2)
                np.testing.assert_array_equal(mine[name].numpy(), theirs[name].numpy())
