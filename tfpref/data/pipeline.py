"""Token streams and the tf.data input pipeline.

A split is tokenized once into one flat stream (`BOS chunk EOS BOS chunk EOS ...`) plus a list of
examples, each a (start, length) window into it:
  * packed (default): consecutive windows of seq_len + 1 tokens overlapping by one, so every token
    is a prediction target exactly once and no compute is spent on padding;
  * padded: one example per chunk, cut at seq_len + 1 tokens, padded with PAD and masked.

Which examples make up optimizer step s is fixed in advance from the seed (`batch_order`), so the
data position is simply the step counter stored in the checkpoint: a resumed run reads exactly the
batches an uninterrupted run would have read next, whatever the number of replicas or workers.
Each element the dataset yields is one replica's share of one step, shaped
[grad_accum, per_replica_micro_batch, seq_len + 1].

`distributed_batches` is what the trainer iterates: token streams go through tf.data, which gathers
and prefetches in parallel with training; ArrayData (rows already held in memory: preference data,
SFT rows, an RL rollout) is gathered in NumPy step by step and handed to each replica directly. An RL
objective makes new ArrayData for every rollout and trains on it for a step or a few: building a
tf.data pipeline and a distributed iterator for each took longer than those steps' gathers.
"""
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfpref.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, ByteTokenizer
from tfpref.errors import UserError


@dataclass
class TokenData:
    stream: np.ndarray    # int32 [num_tokens]
    starts: np.ndarray    # int64 [num_examples]
    lengths: np.ndarray   # int32 [num_examples], each <= seq_len + 1
    seq_len: int
    labels: np.ndarray = None  # int32 [num_examples] class ids, for classification data
    scores: np.ndarray = None  # float32 [num_tokens] misalignment of each token's segment (feedback data)
    segment_lengths: np.ndarray = None  # int32 [num_tokens] bytes in each token's segment

    @property
    def num_examples(self):
        return len(self.starts)

    def gatherer(self):
        return example_gatherer(self)


@dataclass
class ArrayData:
    """Examples held as arrays with one row per example (preference groups, RL rollouts):
    a batch is those rows of every array, keyed by the array's name."""
    arrays: dict          # name -> np.ndarray [num_examples, ...]
    seq_len: int

    @property
    def num_examples(self):
        return len(next(iter(self.arrays.values())))

    def rows(self, indices):
        """{name: array[indices]} for NumPy `indices` of any shape (a batch, without TensorFlow)."""
        return {name: value[indices] for name, value in self.arrays.items()}

    def gatherer(self):
        tensors = {name: tf.constant(value) for name, value in self.arrays.items()}

        def gather(indices, sample_index):
            batch = {name: tf.gather(value, indices) for name, value in tensors.items()}
            batch["sample_index"] = sample_index
            return batch

        return gather


def tokenize_chunks(chunks, tokenizer=None):
    """(stream, chunk_starts, chunk_lengths): chunks as BOS text EOS, concatenated."""
    tokenizer = tokenizer or ByteTokenizer()
    encoded = tokenizer.encode_all(chunks, add_bos=True, add_eos=True)
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    stream = np.concatenate(encoded) if encoded else np.zeros([0], np.int32)
    return stream.astype(np.int32), starts, lengths


def pack_windows(num_tokens, seq_len):
    """(starts, lengths) of consecutive seq_len + 1 windows overlapping by one token."""
    count = max(0, (num_tokens - 1) // seq_len)
    return np.arange(count, dtype=np.int64) * seq_len, np.full([count], seq_len + 1, dtype=np.int32)


def build_token_data(chunks, seq_len, packed=True, tokenizer=None, labels=None):
    """TokenData of `chunks`; `labels` (one class id per chunk) needs packed=False."""
    stream, chunk_starts, chunk_lengths = tokenize_chunks(chunks, tokenizer)
    if packed:
        starts, lengths = pack_windows(len(stream), seq_len)
    else:
        starts, lengths = chunk_starts, np.minimum(chunk_lengths, seq_len + 1).astype(np.int32)
    labels = None if labels is None else np.asarray(labels, np.int32)
    return TokenData(stream, starts, lengths, seq_len, labels)


def batch_order(num_examples, steps, global_batch, seed):
    """[steps, global_batch] example indices: a fresh seeded permutation each epoch."""
    if num_examples == 0:
        raise UserError("the training split has no complete example; use more data or a smaller --seq_len")
    needed = steps * global_batch
    epochs = -(-needed // num_examples)
    order = np.concatenate([np.random.default_rng([seed, epoch]).permutation(num_examples)
                            for epoch in range(epochs)])
    return order[:needed].reshape(steps, global_batch)


def sequential_order(num_examples, steps, global_batch):
    """[steps, global_batch] indices 0, 1, 2, ... repeated if the split is small (for evaluation)."""
    return np.resize(np.arange(num_examples), steps * global_batch).reshape(steps, global_batch)


def replica_shares(order, grad_accum, num_replicas, pipeline_id, num_pipelines):
    """Rows of `order` this input pipeline feeds, one per (step, local replica).

    Returns [steps * local_replicas, grad_accum, micro_batch] indices, where micro_batch is the
    per-replica micro-batch. Replica r of step s always gets the same examples, so one replica and
    several replicas see the same global batch.
    """
    steps, global_batch = order.shape
    micro = global_batch // (grad_accum * num_replicas)
    local = num_replicas // num_pipelines
    shaped = order.reshape(steps, grad_accum, num_replicas, micro)
    mine = shaped[:, :, pipeline_id * local:(pipeline_id + 1) * local, :]
    return np.ascontiguousarray(mine.transpose(0, 2, 1, 3)).reshape(steps * local, grad_accum, micro)


def example_gatherer(data):
    """fn(example indices, sample positions) -> batch dict, for TokenData `data` (any index shape)."""
    stream = tf.constant(data.stream)
    starts = tf.constant(data.starts)
    lengths = tf.constant(data.lengths)
    offsets = tf.range(data.seq_len + 1, dtype=tf.int64)
    last = tf.cast(tf.size(stream) - 1, tf.int64)
    labels = None if data.labels is None else tf.constant(data.labels)
    scores = None if data.scores is None else tf.constant(data.scores)
    segment_lengths = None if data.segment_lengths is None else tf.constant(data.segment_lengths)

    def gather(indices, sample_index):
        example_starts = tf.gather(starts, indices)[..., None]
        mask = offsets < tf.cast(tf.gather(lengths, indices), tf.int64)[..., None]
        positions = tf.minimum(example_starts + offsets, last)
        token_ids = tf.where(mask, tf.gather(stream, positions), PAD_ID)
        batch = {"token_ids": token_ids, "padding_mask": mask, "sample_index": sample_index}
        if labels is not None:
            batch["label"] = tf.gather(labels, indices)
        if scores is not None:
            batch["token_scores"] = tf.where(mask, tf.gather(scores, positions), 0.0)
            batch["segment_lengths"] = tf.where(mask, tf.gather(segment_lengths, positions), 0)
        return batch

    return gather


def make_dataset(data, shares, sample_positions):
    """tf.data.Dataset yielding {'token_ids', 'padding_mask', 'sample_index'} for each row of `shares`.

    `sample_positions` (same shape as `shares`) is each draw's position in the whole run's sample
    order, step * global_batch + row: a stable per-example seed for objectives that corrupt or
    sample, the same on resume and on any number of replicas.
    """
    dataset = tf.data.Dataset.from_tensor_slices((shares, sample_positions))
    dataset = dataset.map(data.gatherer(), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def sample_positions(order, first_step):
    """[steps, global_batch] int64: each draw's position in the run's sample order (`make_dataset`)."""
    steps, global_batch = order.shape
    return (first_step + np.arange(steps, dtype=np.int64))[:, None] * global_batch + np.arange(global_batch)


def distributed_batches(strategy, data, order, grad_accum, first_step=0):
    """The batches of `order` (the rows of the run's steps first_step, first_step + 1, ..., counted
    from 0) for `strategy`'s replicas, one per step: each replica's share is [grad_accum, micro_batch, ...] as
    `replica_shares` cuts it. TokenData through tf.data (`distributed_dataset`), ArrayData gathered
    in NumPy (see the module docstring); the two give the same batches."""
    if isinstance(data, ArrayData):
        return _array_batches(strategy, data, order, grad_accum, first_step)
    return distributed_dataset(strategy, data, order, grad_accum, first_step)


def _array_batches(strategy, data, order, grad_accum, first_step):
    replicas = strategy.num_replicas_in_sync
    steps, global_batch = order.shape
    shape = [steps, grad_accum, replicas, global_batch // (grad_accum * replicas)]
    rows, positions = order.reshape(shape), sample_positions(order, first_step).reshape(shape)
    for step in range(steps):
        def share(context, step=step):
            replica = context.replica_id_in_sync_group
            batch = {name: tf.convert_to_tensor(value) for name, value in data.rows(rows[step, :, replica]).items()}
            batch["sample_index"] = tf.convert_to_tensor(positions[step, :, replica])
            return batch

        yield strategy.experimental_distribute_values_from_function(share)


def distributed_dataset(strategy, data, order, grad_accum, first_step=0):
    """A dataset of `order` distributed over `strategy`'s replicas and input pipelines.

    `order` holds the rows of steps first_step, first_step + 1, ... of the run.
    """
    positions = sample_positions(order, first_step)

    def dataset_fn(context):
        def share(array):
            return replica_shares(array, grad_accum, strategy.num_replicas_in_sync,
                                  context.input_pipeline_id, context.num_input_pipelines)
        return make_dataset(data, share(order), share(positions))

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(dataset_fn, options)


__all__ = ["TokenData", "ArrayData", "build_token_data", "batch_order", "sequential_order", "replica_shares",
           "make_dataset", "distributed_dataset", "distributed_batches", "sample_positions", "BOS_ID", "EOS_ID",
           "PAD_ID"]
