"""Optimizer, learning-rate schedule and loss scaling."""
import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfpref")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak`, then cosine decay to `peak * min_ratio` at `total_steps`."""

    def __init__(self, peak, warmup_steps, total_steps, min_ratio=0.1):
        self.peak, self.warmup_steps = peak, warmup_steps
        self.total_steps, self.min_ratio = total_steps, min_ratio

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        progress = tf.clip_by_value((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1),
                                    0.0, 1.0)
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        decayed = self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cosine)
        return tf.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "min_ratio": self.min_ratio}


def make_optimizer(train_config):
    """AdamW with the warm-up + cosine schedule; no weight decay on biases, norms or embeddings."""
    schedule = WarmupCosine(train_config.learning_rate, train_config.warmup_steps,
                            train_config.train_steps, train_config.min_lr_ratio)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train_config.weight_decay,
                                       beta_1=0.9, beta_2=0.95, epsilon=1e-8)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "embeddings"])
    return optimizer


class DynamicLossScale(tf.Module):
    """fp16 loss scaling: halve on overflow, double after `growth_interval` finite steps.

    With bf16 or fp32 the scale stays 1 and `update` never changes it.
    """

    def __init__(self, enabled, initial=2.0 ** 15, growth_interval=2000):
        super().__init__(name="loss_scale")
        self.enabled, self.growth_interval = enabled, growth_interval
        self.scale = tf.Variable(initial if enabled else 1.0, trainable=False, dtype=tf.float32)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)

    def update(self, finite):
        if not self.enabled:
            return
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                        self.good_steps + 1, tf.constant(0, tf.int64)))
