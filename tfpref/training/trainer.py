"""The one training loop: a GradientTape step per replica, reduced and applied across replicas.

Per replica (XLA-compiled when `jit_compile`): run the objective on each micro-batch, scale the
summed per-example losses by 1/global_batch (what `tf.nn.compute_average_loss` does), accumulate
gradients. Across replicas: sum gradients, unscale, clip by the global norm, and apply only if the
loss and gradients are finite. Gradients are reduced here rather than inside the Keras optimizer
because the optimizer clips before it reduces, which would clip each replica's partial gradient.
"""
import signal
import time

import numpy as np
import tensorflow as tf

from tfpref.data.pipeline import distributed_batches, sequential_order

SUM = tf.distribute.ReduceOp.SUM


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the last good checkpoint is kept."""


class Trainer:
    """Trains `model` on `objective` under `strategy`; see `tfpref.training.run` for the set-up.

    Args:
        config: the resolved, validated RunConfig.
        strategy: a tf.distribute.Strategy; model, objective and optimizer were built in its scope.
        model: the task model (tfpref.models.tasks); objective, optimizer, loss_scale: how to train it.
        step: int64 tf.Variable, optimizer steps taken; it is also the data position.
        train_data, eval_data: TokenData of the train and validation splits (eval_data may be None).
        logger: RunLogger; checkpointer: Checkpointer.
    """

    def __init__(self, config, strategy, model, objective, optimizer, loss_scale, step,
                 train_data, eval_data, logger, checkpointer):
        self.config, self.strategy = config, strategy
        self.model, self.objective, self.optimizer = model, objective, optimizer
        self.loss_scale, self.step = loss_scale, step
        self.train_data, self.eval_data = train_data, eval_data
        self.logger, self.checkpointer = logger, checkpointer
        self.global_batch = config.train.batch_size
        self.grad_accum = config.train.grad_accum
        self.variables = model.trainable_weights_of(config.train.freeze_backbone)
        jit = config.runtime.jit_compile and not several_replicas_on_cpu(strategy)
        self._replica_gradients = tf.function(self._gradients_on_replica, jit_compile=jit)
        self._replica_eval = tf.function(self._eval_on_replica, jit_compile=jit)
        # On one device the whole step, optimizer update included, is one XLA program; with several
        # replicas only the per-replica part can be (the reduction crosses devices).
        whole_step_jit = jit and config.runtime.strategy == "default"
        self.train_step = tf.function(self._step, jit_compile=whole_step_jit)
        self._stop_signal = None

    # ---- the step ---------------------------------------------------------------------------

    def _gradients_on_replica(self, batch):
        grads, loss, metric_sums = None, 0.0, {}
        for i in range(self.grad_accum):  # static: unrolled, so XLA sees one straight-line program
            micro_batch = {key: value[i] for key, value in batch.items()}
            with tf.GradientTape() as tape:
                output = self.objective.compute(micro_batch, self.model, training=True)
                micro_loss = tf.reduce_sum(output.losses) / self.global_batch
                if self.loss_scale.enabled:
                    micro_loss_scaled = micro_loss * self.loss_scale.scale
                else:
                    micro_loss_scaled = micro_loss
            micro_grads = [tf.convert_to_tensor(g) for g in tape.gradient(micro_loss_scaled, self.variables)]
            grads = micro_grads if grads is None else [a + b for a, b in zip(grads, micro_grads)]
            loss += micro_loss
            metric_sums = _add_metric_sums(metric_sums, output.metrics)
        return grads, loss, metric_sums

    def _step(self, batch):
        grads, loss, metric_sums = self.strategy.run(self._replica_gradients, (batch,))
        grads = [self.strategy.reduce(SUM, g, axis=None) for g in grads]
        if self.loss_scale.enabled:
            grads = [g / self.loss_scale.scale for g in grads]
        loss = self.strategy.reduce(SUM, loss, axis=None)
        metric_sums = tf.nest.map_structure(lambda x: self.strategy.reduce(SUM, x, axis=None), metric_sums)
        grad_norm = tf.linalg.global_norm(grads)
        finite_grads = tf.math.is_finite(grad_norm)
        finite = tf.logical_and(tf.math.is_finite(loss), finite_grads)
        if self.config.train.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.config.train.clip_norm, use_norm=grad_norm)

        def apply():
            self.optimizer.apply_gradients(zip(grads, self.variables))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        self.loss_scale.update(finite)
        self.step.assign_add(1)
        return {"loss": loss, "grad_norm": grad_norm, "finite_loss": tf.math.is_finite(loss),
                "finite_grads": finite_grads, "metric_sums": metric_sums}

    def _eval_on_replica(self, batch):
        output = self.objective.compute({key: value[0] for key, value in batch.items()},
                                        self.model, training=False)
        return _add_metric_sums({"loss": (tf.reduce_sum(output.losses), tf.cast(tf.size(output.losses),
                                                                                tf.float32))},
                                output.metrics)

    @tf.function
    def eval_step(self, batch):
        sums = self.strategy.run(self._replica_eval, (batch,))
        return tf.nest.map_structure(lambda x: self.strategy.reduce(SUM, x, axis=None), sums)

    # ---- the loop ---------------------------------------------------------------------------

    def evaluate(self):
        """{metric: mean} over the validation batches, or {} without validation data."""
        if self.eval_data is None or self.eval_data.num_examples == 0:
            return {}
        order = sequential_order(self.eval_data.num_examples, self.config.runtime.eval_batches,
                                 self.global_batch)
        totals = {}
        for batch in distributed_batches(self.strategy, self.eval_data, order, grad_accum=1):
            totals = _add_metric_sums(totals, _to_numpy(self.eval_step(batch)))
        return self.objective.summarize(_means(totals))

    def fit(self):
        """Train up to `train_steps`, resuming from the step counter. Returns final metrics."""
        runtime, total = self.config.runtime, self.config.train.train_steps
        start = int(self.step.numpy())
        dataset = self._train_batches(start)
        tokens_per_step = self.global_batch * self.train_data.seq_len
        window = _Window()
        last = {}
        bad_streak = 0
        with _StopOnSignals(self):
            for step, batch in zip(range(start + 1, total + 1), dataset):
                began = time.perf_counter()
                result = _to_numpy(self.train_step(batch))
                window.add(result, time.perf_counter() - began)
                if result["finite_loss"] and (result["finite_grads"] or self.loss_scale.enabled):
                    bad_streak = 0
                    last = {"loss": float(result["loss"])}
                else:
                    bad_streak += 1
                    self._on_bad_step(step, bad_streak)
                self.logger.advance(step, float(result["loss"]), tokens_per_step / window.last_seconds)
                if step % runtime.log_every == 0 or step == total:
                    self.logger.scalars("train", step, self._train_scalars(window, tokens_per_step))
                    window = _Window()
                if step % runtime.eval_every == 0 and step != total:
                    self.logger.scalars("eval", step, self.evaluate())
                if self._stop_signal is not None:
                    self.checkpointer.save(step)
                    return {"step": step, "interrupted_by": self._stop_signal, **last}
                # Never checkpoint inside a streak of skipped steps: the last good one is kept.
                if (step % runtime.checkpoint_every == 0 or step == total) and bad_streak == 0:
                    self.checkpointer.save(step)
        final_step = int(self.step.numpy())
        validation = self.evaluate()
        if validation:
            self.logger.scalars("eval", final_step, validation)
        return {"step": final_step, **last, **{f"validation_{k}": v for k, v in validation.items()}}

    def _train_batches(self, first_step):
        """Distributed batches of the objective's plans, for steps first_step + 1, ..."""
        for plan in self.objective.batch_plans(self.train_data, first_step):
            for name, markdown in plan.texts.items():
                self.logger.text("train", plan.first_step + 1, name, markdown)
            yield from distributed_batches(self.strategy, plan.data, plan.order, self.grad_accum,
                                           first_step=plan.first_step)

    def _train_scalars(self, window, tokens_per_step):
        scalars = self.objective.summarize(window.metric_means())
        scalars.update(loss=window.mean("loss"), grad_norm=window.mean("grad_norm"),
                       learning_rate=float(self.optimizer.learning_rate.numpy()),
                       step_time=window.seconds / window.count,
                       tokens_per_second=tokens_per_step * window.count / window.seconds)
        if self.loss_scale.enabled:
            scalars["loss_scale"] = float(self.loss_scale.scale.numpy())
        return scalars

    def _on_bad_step(self, step, bad_streak):
        limit = self.config.runtime.max_bad_steps
        self.logger.scalars("train", step, {"nonfinite_step": 1.0})
        print(f"\nstep {step}: non-finite loss or gradient, update skipped ({bad_streak}/{limit})", flush=True)
        if bad_streak >= limit:
            latest = self.checkpointer.latest or "none yet"
            raise TrainingDiverged(f"{limit} consecutive non-finite steps at step {step}; stopping. "
                                   f"Last good checkpoint: {latest}. Try a lower --learning_rate.")


def several_replicas_on_cpu(strategy):
    """True when logical CPU devices stand in for accelerators (--cpu_replicas > 1).

    XLA's CPU backend places a compiled function on the first CPU device whatever the replica's
    logical device is, so it cannot read the second replica's variables: those runs skip XLA.
    """
    if strategy.num_replicas_in_sync == 1:
        return False
    devices = strategy.extended.worker_devices
    return len(devices) > 1 and all("CPU" in d.upper() for d in devices)


class _Window:
    """Sums of step results over one logging interval."""

    def __init__(self):
        self.count, self.seconds, self.last_seconds = 0, 0.0, 1.0
        self.sums = {"loss": 0.0, "grad_norm": 0.0}
        self.metric_sums = {}

    def add(self, result, seconds):
        self.count += 1
        self.seconds += seconds
        self.last_seconds = seconds
        if result["finite_loss"] and result["finite_grads"]:
            for key in self.sums:
                self.sums[key] += float(result[key])
            self.metric_sums = _add_metric_sums(self.metric_sums, result["metric_sums"])

    def mean(self, key):
        return self.sums[key] / max(self.count, 1)

    def metric_means(self):
        return _means(self.metric_sums)


class _StopOnSignals:
    """On SIGINT/SIGTERM, let the current step finish, then checkpoint and return."""

    def __init__(self, trainer):
        self.trainer, self.previous = trainer, {}

    def __enter__(self):
        def handler(signum, frame):
            self.trainer._stop_signal = signal.Signals(signum).name

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def _add_metric_sums(totals, new):
    """Element-wise sum of two {name: (numerator, denominator)} dicts."""
    out = dict(totals)
    for name, (numerator, denominator) in new.items():
        if name in out:
            numerator, denominator = out[name][0] + numerator, out[name][1] + denominator
        out[name] = (numerator, denominator)
    return out


def _means(sums):
    return {name: float(n) / float(d) for name, (n, d) in sums.items() if float(d) > 0}


def _to_numpy(structure):
    return tf.nest.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else np.asarray(x), structure)
