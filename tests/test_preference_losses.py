"""Golden tests: reward-model, DPO/IPO, policy-gradient, GAE and KL formulas against NumPy by hand."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfpref.objectives.dpo import dpo_losses
from tfpref.rl.kl import KLController, kl_estimates
from tfpref.objectives.policy_gradient import (gae, leave_one_out_baselines, ppo_policy_losses,
                                               reinforce_losses, value_losses)
from tfpref.objectives.reward_model import (all_pairs_losses, bradley_terry_losses, ceiling_sums,
                                            expected_accuracy_sums, pairwise_correct, plackett_luce_losses)

REWARDS = np.array([[1.5, 0.2, -0.7, 0.0], [0.1, 0.9, 0.3, 2.0]], np.float32)  # best first
VALID = np.array([[True, True, True, False], [True, True, True, True]])


def log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def test_bradley_terry_with_margin():
    chosen, rejected, margin = np.array([1.0, -0.5, 2.0]), np.array([0.0, 0.5, 2.0]), np.array([0.0, 0.3, 1.0])
    got = bradley_terry_losses(tf.constant(chosen), tf.constant(rejected), tf.constant(margin)).numpy()
    np.testing.assert_allclose(got, -log_sigmoid(chosen - rejected - margin), rtol=1e-6)


def test_plackett_luce_is_minus_log_probability_of_the_ranking():
    expected = []
    for row, valid in zip(REWARDS, VALID):
        r = row[valid].astype(np.float64)
        expected.append(-sum(r[i] - np.log(np.exp(r[i:]).sum()) for i in range(len(r))))
    got = plackett_luce_losses(tf.constant(REWARDS), tf.constant(VALID)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Two completions: Plackett-Luce is Bradley-Terry.
    pair = plackett_luce_losses(tf.constant([[0.4, 1.0]]), tf.constant([[True, True]])).numpy()
    np.testing.assert_allclose(pair, -log_sigmoid(0.4 - 1.0), rtol=1e-5)


def test_all_pairs_and_pairwise_accuracy():
    expected_loss, expected_right, expected_pairs = [], [], []
    for row, valid in zip(REWARDS, VALID):
        r = row[valid]
        pairs = list(itertools.combinations(range(len(r)), 2))
        expected_loss.append(np.mean([-log_sigmoid(r[i] - r[j]) for i, j in pairs]))
        expected_right.append(sum(r[i] > r[j] for i, j in pairs))
        expected_pairs.append(len(pairs))
    np.testing.assert_allclose(all_pairs_losses(tf.constant(REWARDS), tf.constant(VALID)).numpy(),
                               expected_loss, rtol=1e-5)
    right, pairs = pairwise_correct(tf.constant(REWARDS), tf.constant(VALID))
    np.testing.assert_array_equal(right.numpy(), expected_right)
    np.testing.assert_array_equal(pairs.numpy(), expected_pairs)


def test_expected_accuracy_and_ceiling_against_the_annotators_probabilities():
    # Pairs: P(annotator prefers the chosen one); unknown (NaN) pairs are left out, a tie counts 1/2.
    rewards = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [2.0, 1.0]], np.float32)
    p = np.array([0.9, 0.7, 0.6, np.nan], np.float32)
    total, count = expected_accuracy_sums(tf.constant(rewards), tf.constant(p))
    assert count.numpy() == 3 and total.numpy() == pytest.approx(0.9 + 0.3 + 0.5)
    best, count = ceiling_sums(tf.constant(p))
    assert count.numpy() == 3 and best.numpy() == pytest.approx(0.9 + 0.7 + 0.6)
    # Rankings: p[n, i, j] = P(annotator prefers row i to row j), over the valid pairs i < j.
    p = np.random.default_rng(0).uniform(size=(2, 4, 4)).astype(np.float32)
    p[1, 0, 2] = np.nan
    expected, pairs = 0.0, 0
    for row, valid, probabilities in zip(REWARDS, VALID, p):
        for i, j in itertools.combinations(np.flatnonzero(valid), 2):
            if not np.isnan(probabilities[i, j]):
                pairs += 1
                expected += probabilities[i, j] if row[i] > row[j] else 1 - probabilities[i, j]
    total, count = expected_accuracy_sums(tf.constant(REWARDS), tf.constant(p), tf.constant(VALID))
    assert count.numpy() == pairs == 8 and total.numpy() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("ipo", [False, True])
def test_dpo_and_ipo(ipo):
    pc, pr = np.array([-10.0, -4.0]), np.array([-12.0, -3.0])
    rc, rr = np.array([-11.0, -4.5]), np.array([-11.5, -3.5])
    beta = 0.1
    h = (pc - rc) - (pr - rr)
    expected = (h - 1 / (2 * beta)) ** 2 if ipo else -log_sigmoid(beta * h)
    got = dpo_losses(*(tf.constant(x) for x in (pc, pr, rc, rr)), beta, ipo=ipo).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_reinforce_and_ppo_clipped_surrogate():
    rng = np.random.default_rng(0)
    logp, old = rng.normal(-2, 0.5, [3, 5]), rng.normal(-2, 0.5, [3, 5])
    adv = rng.normal(0, 1, [3, 5])
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], np.float64)
    np.testing.assert_allclose(reinforce_losses(*(tf.constant(x) for x in (logp, adv, mask))).numpy(),
                               -(adv * logp * mask).sum(1), rtol=1e-6)
    eps = 0.2
    ratio = np.exp(logp - old)
    per_token = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps))
    losses, clipped = ppo_policy_losses(*(tf.constant(x) for x in (logp, old, adv, mask)), eps)
    np.testing.assert_allclose(losses.numpy(), (per_token * mask).sum(1) / mask.sum(1), rtol=1e-6)
    np.testing.assert_array_equal(clipped.numpy(), ((-adv * np.clip(ratio, 1 - eps, 1 + eps) > -adv * ratio)
                                                    * mask))
    values, old_values, returns = rng.normal(size=[3, 5]), rng.normal(size=[3, 5]), rng.normal(size=[3, 5])
    clipped_values = old_values + np.clip(values - old_values, -eps, eps)
    expected = 0.5 * np.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    got = value_losses(*(tf.constant(x) for x in (values, old_values, returns, mask)), eps).numpy()
    np.testing.assert_allclose(got, (expected * mask).sum(1) / mask.sum(1), rtol=1e-6)


def test_gae_matches_the_recursion_written_out():
    rewards = np.array([[0.0, 0.1, -0.2, 1.0, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0]])
    values = np.array([[9.0, 0.3, 0.2, 0.4, 9.0], [0.1, 0.2, 9.0, 9.0, 9.0]])  # 9: off the mask
    mask = np.array([[False, True, True, True, False], [True, True, False, False, False]])
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # Row 0 over positions 1..3, row 1 over 0..1; the value after the last token is 0.
    d3 = 1.0 - 0.4
    d2 = -0.2 + gamma * 0.4 - 0.2
    d1 = 0.1 + gamma * 0.2 - 0.3
    a3, a2 = d3, d2 + gamma * lam * d3
    a1 = d1 + gamma * lam * a2
    np.testing.assert_allclose(advantages[0], [0, a1, a2, a3, 0], rtol=1e-6)
    b1 = 0.0 - 0.2
    b0 = 0.5 + gamma * 0.2 - 0.1 + gamma * lam * b1
    np.testing.assert_allclose(advantages[1], [b0, b1, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(returns, np.where(mask, advantages + values, 0), rtol=1e-6)


def test_leave_one_out_baseline():
    totals = np.array([1.0, 2.0, 6.0, 0.0, -1.0, 1.0])
    np.testing.assert_allclose(leave_one_out_baselines(totals, 3), [4.0, 3.5, 1.5, 0.0, 0.5, -0.5])


def test_kl_estimators_k1_and_k3():
    logp, ref = np.array([-1.0, -2.0, -0.5]), np.array([-1.5, -1.0, -0.5])
    np.testing.assert_allclose(kl_estimates(logp, ref, "k1"), logp - ref)
    r = np.exp(ref - logp)
    np.testing.assert_allclose(kl_estimates(logp, ref, "k3"), (r - 1) - np.log(r))
    np.testing.assert_allclose(kl_estimates(tf.constant(logp), tf.constant(ref), "k3").numpy(),
                               (r - 1) - np.log(r), rtol=1e-6)
    # Both are unbiased: on samples from p, their means approach KL(p || q) of two Gaussians.
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, 200000)
    logp_x, logq_x = -0.5 * x ** 2, -0.5 * (x - 0.5) ** 2
    for estimator in ("k1", "k3"):
        assert kl_estimates(logp_x, logq_x, estimator).mean() == pytest.approx(0.125, abs=0.01)


def test_adaptive_kl_controller_moves_toward_the_target_and_fixed_does_not():
    adaptive = KLController(0.1, target=2.0, horizon=100)
    adaptive.update(kl=10.0, completions=10)  # far above target: error clipped to +0.2
    assert float(adaptive) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100), rel=1e-6)
    adaptive.update(kl=1.8, completions=10)  # 10% below target
    assert float(adaptive) == pytest.approx(0.102 * (1 - 0.1 * 10 / 100), rel=1e-6)
    fixed = KLController(0.1)
    fixed.update(kl=10.0, completions=10)
    assert float(fixed) == pytest.approx(0.1)
