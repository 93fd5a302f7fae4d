"""Golden tests of the pretraining-with-feedback losses against NumPy formulas on fixed tensors."""
import numpy as np
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.config import ModelConfig, RunConfig, TrainConfig
from tfpref.data.tokenizer import CONTROL_TOKENS
from tfpref.models import build_task_model
from tfpref.objectives import build_objective
from tfpref.objectives.reward_weighted import MAX_WEIGHT, awr_token_losses, rwr_token_losses
from tfpref.objectives.unlikelihood import unlikelihood_token_losses

from test_objectives import FixedLogits, numpy_log_softmax

ALIGNED_ID, MISALIGNED_ID = CONTROL_TOKENS["<|aligned|>"], CONTROL_TOKENS["<|misaligned|>"]

RNG = np.random.default_rng(3)
LOGP = np.log(RNG.uniform(0.01, 0.99, size=(2, 5))).astype(np.float32)
LOGP[0, 0] = np.log(1.0 - 1e-9)  # p rounds to 1 in float32: -log(1 - p) must stay finite
SCORES = RNG.choice([0.0, 0.02, 0.5], size=(2, 5)).astype(np.float32)


def test_unlikelihood_matches_numpy():
    alpha = 0.3
    aligned = SCORES <= 0.0
    got = unlikelihood_token_losses(tf.constant(LOGP), tf.constant(aligned), alpha).numpy()
    p = np.exp(LOGP.astype(np.float64))
    expected = np.where(aligned, -LOGP, -alpha * np.log(np.maximum(1 - p, 1e-20)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.all(np.isfinite(got))


def test_rwr_matches_numpy():
    beta = 0.5
    got = rwr_token_losses(tf.constant(LOGP), tf.constant(-SCORES), beta).numpy()
    np.testing.assert_allclose(got, np.exp(-SCORES / beta) * -LOGP, rtol=1e-5)


def test_awr_matches_numpy_and_weights_are_not_differentiated():
    alpha, beta = 0.05, 1.0
    values = tf.constant(RNG.normal(size=(2, 5)).astype(np.float32))
    values_np = values.numpy().astype(np.float64)
    rewards = -SCORES.astype(np.float64)
    values_np[0, 1] = -20.0  # a huge advantage: the weight is clipped
    values = tf.constant(values_np.astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(values)
        losses, weights = awr_token_losses(tf.constant(LOGP), values, tf.constant(-SCORES), alpha, beta)
        total = tf.reduce_sum(losses)
    expected_weights = np.minimum(np.exp((rewards - values_np) / beta), MAX_WEIGHT)
    expected = alpha * expected_weights * -LOGP + (1 - alpha) * (values_np - rewards) ** 2
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-4)
    np.testing.assert_allclose(losses, expected, rtol=1e-4)
    assert weights.numpy()[0, 1] == MAX_WEIGHT
    # d/dV: only the value loss, 2 (1 - alpha)(V - r); the weights are constants.
    np.testing.assert_allclose(tape.gradient(total, values), 2 * (1 - alpha) * (values_np - rewards), rtol=1e-4)


def _scored_batch():
    tokens = RNG.integers(16, 40, size=(2, 6)).astype(np.int32)
    tokens[1, 3] = ALIGNED_ID  # a control token target: not text
    mask = np.ones((2, 6), bool)
    mask[1, 5] = False
    scores = np.concatenate([np.zeros((2, 1), np.float32), SCORES], axis=1) * mask
    logits = RNG.normal(size=(2, 5, 40)).astype(np.float32)
    batch = {"token_ids": tf.constant(tokens), "padding_mask": tf.constant(mask),
             "token_scores": tf.constant(scores), "segment_lengths": tf.constant(np.full((2, 6), 7, np.int32))}
    logp = np.take_along_axis(numpy_log_softmax(logits.astype(np.float64)), tokens[:, 1:, None], -1)[..., 0]
    return batch, FixedLogits(logits), logp * mask[:, 1:], mask, scores


def _objective(name, **feedback):
    config = RunConfig()
    config.train.objective = name
    for key, value in feedback.items():
        setattr(config.feedback, key, value)
    return build_objective(config)


def test_unlikelihood_objective_loss_and_metrics():
    batch, model, logp, mask, scores = _scored_batch()
    output = _objective("unlikelihood", ul_alpha=0.5, threshold=0.0).compute(batch, model, True)
    aligned = scores[:, 1:] <= 0.0
    with np.errstate(divide="ignore", invalid="ignore"):  # padding: log p = 0, masked below
        token = np.where(aligned, -logp, -0.5 * np.log(1 - np.exp(logp))) * mask[:, 1:]
    token = np.nan_to_num(token)
    np.testing.assert_allclose(output.losses, token.sum(1) / 5, rtol=1e-4)
    text = mask[:, 1:] & (batch["token_ids"].numpy()[:, 1:] != ALIGNED_ID)
    np.testing.assert_allclose(output.metrics["nll"][0], -(logp * text).sum(), rtol=1e-5)
    assert float(output.metrics["nll"][1]) == text.sum()
    np.testing.assert_allclose(output.metrics["nll_aligned"][0], -(logp * (text & aligned)).sum(), rtol=1e-5)


def test_rwr_objective_loss():
    batch, model, logp, mask, scores = _scored_batch()
    output = _objective("rwr", beta=0.1).compute(batch, model, True)
    expected = (np.exp(-scores[:, 1:] / 0.1) * -logp * mask[:, 1:]).sum(1) / 5
    np.testing.assert_allclose(output.losses, expected, rtol=1e-4)


def test_conditional_and_filter_train_on_mle():
    batch, model, logp, mask, _ = _scored_batch()
    for name in ("conditional", "filter"):
        output = _objective(name).compute(batch, model, True)
        np.testing.assert_allclose(output.losses, -logp.sum(1) / 5, rtol=1e-5)  # control targets included


def test_conditional_prefixes_control_tokens_by_threshold_and_drops_some():
    objective_cls = type(_objective("conditional"))
    config = RunConfig()
    config.feedback.threshold, config.feedback.drop_control_fraction = 0.01, 0.0
    scores = np.array([0.0, 0.01, 0.02, 0.5])
    ids = objective_cls.segment_prefixes(config, scores, np.random.default_rng(0), training=True)
    assert ids.tolist() == [ALIGNED_ID, ALIGNED_ID, MISALIGNED_ID, MISALIGNED_ID]
    config.feedback.drop_control_fraction = 0.5
    many = objective_cls.segment_prefixes(config, np.zeros(4000), np.random.default_rng(0), training=True)
    assert 0.45 < np.mean(many == -1) < 0.55
    held_out = objective_cls.segment_prefixes(config, np.zeros(100), np.random.default_rng(0), training=False)
    assert np.all(held_out == ALIGNED_ID)  # evaluation data always carries its control tokens


def test_filter_selects_by_threshold_or_percentile():
    objective_cls = type(_objective("filter"))
    config = RunConfig()
    scores = np.array([0.0, 0.001, 0.003, 0.1])
    assert objective_cls.select_segments(config, scores).tolist() == [True, True, False, False]
    config.feedback.filter_percentile = 75
    assert objective_cls.select_segments(config, scores).tolist() == [True, True, True, False]


def test_preference_vector_adds_the_projection_to_each_token_embedding():
    objective = _objective("preference_vector")
    task = build_task_model(RunConfig(model=ModelConfig(d_model=8, num_layers=1, num_heads=2, ff_dim=8),
                                      train=TrainConfig(objective="preference_vector")))
    batch, _, _, mask, scores = _scored_batch()
    seen = {}

    class Recorder(FixedLogits):
        preference_offsets = task.preference_offsets  # the task model's projection, nothing else of it

        def __call__(self, token_ids, padding_mask=None, training=False, embedding_offset=None):
            seen["offset"] = embedding_offset
            return self.logits

    objective.compute(batch, Recorder(np.zeros((2, 5, 40), np.float32)), True)
    kernel, bias = (w.numpy() for w in task.preference_projection.weights)
    features = np.stack([np.minimum(scores / 0.05, 1.0), np.full(scores.shape, np.log1p(7) / np.log1p(4096))], -1)
    expected = (features @ kernel + bias) * mask[..., None]
    np.testing.assert_allclose(seen["offset"], expected[:, :-1], rtol=1e-4, atol=1e-6)
