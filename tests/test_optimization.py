import math

import numpy as np
import pytest
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.config import TrainConfig
from tfpref.training.optimization import DynamicLossScale, WarmupCosine, make_optimizer


def test_warmup_then_cosine_decay_to_the_floor():
    schedule = WarmupCosine(peak=1e-3, warmup_steps=10, total_steps=110, min_ratio=0.1)
    values = {step: float(schedule(step)) for step in (0, 4, 9, 10, 60, 110, 200)}
    assert values[0] == pytest.approx(1e-4) and values[4] == pytest.approx(5e-4)
    assert values[9] == pytest.approx(1e-3) and values[10] == pytest.approx(1e-3)
    assert values[60] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert values[110] == pytest.approx(1e-4) and values[200] == pytest.approx(1e-4)


def test_weight_decay_skips_biases_norms_and_embeddings():
    optimizer = make_optimizer(TrainConfig(weight_decay=0.5, learning_rate=1e-3, train_steps=10))
    decayed = tf.Variable(tf.ones([2, 2]), name="kernel")
    exempt = [tf.Variable(tf.ones([2]), name=n) for n in ("bias", "gamma", "beta", "embeddings")]
    optimizer.build([decayed, *exempt])
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in [decayed, *exempt]])
    assert float(decayed[0, 0]) < 1.0
    for variable in exempt:
        np.testing.assert_array_equal(variable.numpy(), 1.0)


def test_dynamic_loss_scale_halves_on_overflow_and_grows_after_a_clean_stretch():
    scale = DynamicLossScale(enabled=True, initial=1024.0, growth_interval=3)
    scale.update(tf.constant(False))
    assert float(scale.scale) == 512.0
    for _ in range(3):
        scale.update(tf.constant(True))
    assert float(scale.scale) == 1024.0 and int(scale.good_steps) == 0
    fixed = DynamicLossScale(enabled=False)
    fixed.update(tf.constant(False))
    assert float(fixed.scale) == 1.0
