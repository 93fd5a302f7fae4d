"""KL to the reference policy: per-token estimators and the fixed / adaptive coefficient.

On tokens sampled from the policy, with log-ratio d = log pi_ref - log pi:
  * k1 = -d: unbiased, but single samples can be negative;
  * k3 = (e^d - 1) - d: unbiased and never negative, lower variance when the policies are close
    (Schulman, "Approximating KL divergence", 2020).
The adaptive controller is Ziegler et al. 2019's: after each rollout,
kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * completions / horizon.
"""
import numpy as np
import tensorflow as tf


def kl_estimates(logprobs, reference_logprobs, estimator="k1"):
    """Per-token KL estimates (NumPy or TF arrays of the same shape)."""
    d = reference_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k3":
        return np.expm1(d) - d if isinstance(d, np.ndarray) else tf.math.expm1(d) - d
    raise ValueError(f"unknown KL estimator {estimator!r}")


class KLController:
    """The KL coefficient, a tf.Variable saved in checkpoints; adaptive when `target` > 0."""

    def __init__(self, initial, target=0.0, horizon=10000):
        self.value = tf.Variable(float(initial), trainable=False, dtype=tf.float32, name="kl_coef")
        self.target, self.horizon = target, horizon

    def __float__(self):
        return float(self.value.numpy())

    def update(self, kl, completions):
        """Adapt to the mean KL per completion `kl` measured over `completions` samples."""
        if self.target > 0:
            error = np.clip(kl / self.target - 1.0, -0.2, 0.2)
            self.value.assign(float(self) * (1.0 + error * completions / self.horizon))
