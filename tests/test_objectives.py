"""Golden tests: each loss against a hand-written NumPy formula on fixed tensors."""
import math

import numpy as np
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.config import OBJECTIVE_NAMES, RunConfig, TrainConfig
from tfpref.objectives import OBJECTIVES, build_objective


class FixedLogits:
    """A stand-in 'model' returning fixed logits, so the loss is checked in isolation."""

    def __init__(self, logits):
        self.logits = tf.constant(logits, tf.float32)

    def __call__(self, token_ids, padding_mask=None, training=False):
        return self.logits


def numpy_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_mle_loss_and_metrics_match_numpy():
    rng = np.random.default_rng(0)
    batch, length, vocab = 3, 6, 7
    tokens = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), bool)
    mask[2, 4:] = False
    logits = rng.normal(size=(batch, length - 1, vocab)).astype(np.float32)

    output = build_objective(RunConfig(train=TrainConfig(objective="mle"))).compute(
        {"token_ids": tf.constant(tokens), "padding_mask": tf.constant(mask)}, FixedLogits(logits), True)

    logp = np.take_along_axis(numpy_log_softmax(logits.astype(np.float64)), tokens[:, 1:, None], -1)[..., 0]
    nll = -(logp * mask[:, 1:]).sum(1)
    np.testing.assert_allclose(output.losses, nll / (length - 1), rtol=1e-5)
    # The nll metric counts text targets only: ids 3..15 are control tokens (inputs, not text).
    text = mask[:, 1:] & ((tokens[:, 1:] < 3) | (tokens[:, 1:] >= 16))
    numerator, denominator = output.metrics["nll"]
    np.testing.assert_allclose(numerator, -(logp * text).sum(), rtol=1e-5)
    assert float(denominator) == text.sum()


def test_mle_summary_derives_perplexity_and_bits():
    means = OBJECTIVES["mle"](RunConfig()).summarize({"nll": 2.0})
    assert math.isclose(means["perplexity"], math.exp(2.0))
    assert math.isclose(means["bits_per_byte"], 2.0 / math.log(2))


def test_every_objective_name_of_the_config_has_its_class():
    assert sorted(OBJECTIVES) == sorted(OBJECTIVE_NAMES)
