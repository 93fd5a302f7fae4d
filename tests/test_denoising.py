"""Denoising objective: corruption semantics, golden loss, and training through the CLI path."""
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.data.tokenizer import PAD_ID
from tfpref.objectives.denoising import (MASK_ID, RECONSTRUCT_ID, DenoisingObjective, compact, corrupt,
                                         span_cover)


def rates(mask=0.0, delete=0.0, shuffle=0.0, span=3):
    return SimpleNamespace(train=SimpleNamespace(mask_rate=mask, delete_rate=delete, shuffle_rate=shuffle,
                                                 span_length=span))


SOURCE = tf.constant(np.arange(20, 20 + 2 * 60).reshape(2, 60), tf.int32)
SAMPLES = tf.constant([7, 8], tf.int64)


def real_tokens(row):
    return [t for t in row if t != PAD_ID]


def test_span_cover_spans_have_the_given_length_and_rate():
    uniform = tf.random.stateless_uniform([64, 400], [0, 0])
    covered, span_start = span_cover(uniform, rate=0.3, span_length=4)
    assert 0.2 < float(tf.reduce_mean(tf.cast(covered, tf.float32))) < 0.35
    covered, span_start = covered.numpy(), span_start.numpy()
    index = np.arange(400)[None, :]
    assert ((index - span_start)[covered] < 4).all() and (span_start[covered] >= 0).all()


def test_compact_keeps_order_and_pads_the_tail():
    tokens = tf.constant([[5, 6, 7, 8]])
    keep = tf.constant([[True, False, True, False]])
    np.testing.assert_array_equal(compact(tokens, keep), [[5, 7, PAD_ID, PAD_ID]])


def test_deletion_removes_tokens_and_keeps_the_rest_in_order():
    out = corrupt(SOURCE, SAMPLES, 0.0, 0.3, 0.0, 3).numpy()
    for row, source in zip(out, SOURCE.numpy()):
        kept = real_tokens(row)
        assert 0 < len(kept) < 60
        assert kept == [t for t in source if t in set(kept)]  # a subsequence, in order


def test_masking_collapses_each_span_into_one_mask_token():
    out = corrupt(SOURCE, SAMPLES, 0.3, 0.0, 0.0, 3).numpy()
    for row, source in zip(out, SOURCE.numpy()):
        kept = real_tokens(row)
        masks = kept.count(MASK_ID)
        assert masks > 0
        survivors = [t for t in kept if t != MASK_ID]
        assert survivors == [t for t in source if t in set(survivors)]
        assert len(survivors) + masks < 60


def test_shuffling_permutes_within_spans_only():
    out = corrupt(SOURCE, SAMPLES, 0.0, 0.0, 0.5, 4).numpy()
    for row, source in zip(out, SOURCE.numpy()):
        assert sorted(row) == sorted(source) and list(row) != list(source)
        assert np.abs(row - source).max() < 4  # no token moves out of its span


def test_corruption_depends_only_on_the_sample_index():
    a = corrupt(SOURCE, tf.constant([7, 8], tf.int64), 0.2, 0.1, 0.1, 3)
    b = corrupt(SOURCE[::-1], tf.constant([8, 7], tf.int64), 0.2, 0.1, 0.1, 3)
    np.testing.assert_array_equal(a, b.numpy()[::-1])
    assert not np.array_equal(a, corrupt(SOURCE, tf.constant([9, 10], tf.int64), 0.2, 0.1, 0.1, 3))


class FixedLogits:
    def __init__(self, logits):
        self.logits = tf.constant(logits, tf.float32)

    def __call__(self, token_ids, padding_mask=None, training=False):
        self.seen = token_ids
        return self.logits


def test_denoising_loss_is_the_nll_of_the_original_after_the_separator():
    length = 21  # seq_len 20 + 1: source of 10 tokens, separator, 10 original tokens
    tokens = tf.constant(np.arange(30, 30 + 2 * length).reshape(2, length), tf.int32)
    batch = {"token_ids": tokens, "padding_mask": tf.ones_like(tokens, tf.bool),
             "sample_index": tf.constant([0, 1], tf.int64)}
    objective = DenoisingObjective(rates(mask=0.2))
    sequence, padding_mask, loss_mask = (t.numpy() for t in objective.make_inputs(batch))
    np.testing.assert_array_equal(sequence[:, 10], RECONSTRUCT_ID)
    np.testing.assert_array_equal(sequence[:, 11:], tokens.numpy()[:, :10])
    logits = np.random.default_rng(0).normal(size=(2, length - 1, 300)).astype(np.float32)
    output = objective.compute(batch, FixedLogits(logits), training=True)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    token_logp = np.take_along_axis(log_softmax, sequence[:, 1:, None], -1)[..., 0]
    expected = -(token_logp * loss_mask[:, 1:]).sum(1) / 10
    np.testing.assert_allclose(output.losses, expected, rtol=1e-5)
    assert loss_mask[:, 1:].sum() == 20  # exactly the 10 original tokens of each row


@pytest.mark.slow
def test_denoising_trains_end_to_end_and_lowers_the_reconstruction_loss(tmp_path):
    from helpers import tiny_config, write_tiny_corpus
    from tfpref.training.run import train

    corpus = write_tiny_corpus(str(tmp_path))
    config = tiny_config(tmp_path / "run", corpus, objective="denoising", train_steps=40, eval_every=20,
                         learning_rate=1e-2)
    result = train(config, show_progress=False)
    assert result["step"] == 40
    from test_training import scalar_events
    losses = scalar_events(tmp_path / "run" / "train")["reconstruction_nll"]
    assert losses[-1] < 0.6 * losses[0]
    assert np.isfinite(result["validation_reconstruction_nll"])
