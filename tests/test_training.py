"""End-to-end training: loss goes down, logging, checkpoints, accumulation, replicas, bad steps."""
import json

import numpy as np
import pytest
import tensorflow as tf

import tfpref  # noqa: F401
from tfpref.objectives.base import ObjectiveOutput
from tfpref.training.run import build_trainer, train
from tfpref.training.trainer import TrainingDiverged

from helpers import TINY_FLAGS, run_train, scalar_events, tiny_config, train_in_process, write_tiny_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_training_lowers_the_loss_and_writes_a_complete_run_dir(tmp_path, corpus, model):
    config = tiny_config(tmp_path / "run", corpus, model=model, train_steps=40, eval_every=20,
                         checkpoint_every=20, learning_rate=1e-2, jit_compile=True)
    result = train(config, show_progress=False)
    assert result["step"] == 40
    train_scalars = scalar_events(tmp_path / "run" / "train")
    losses = train_scalars["loss"]
    assert losses[-1] < 0.6 * losses[0]
    for tag in ("perplexity", "learning_rate", "grad_norm", "tokens_per_second", "step_time", "config"):
        assert tag in train_scalars, tag
    eval_scalars = scalar_events(tmp_path / "run" / "eval")
    assert len(eval_scalars["nll"]) == 2 and "perplexity" in eval_scalars
    assert json.load(open(tmp_path / "run" / "config.json"))["model"]["model"] == model
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("ckpt-40")
    assert result["validation_nll"] == pytest.approx(eval_scalars["nll"][-1])


def trained_weights(tmp_path, corpus, name, steps=2, **overrides):
    trainer = build_trainer(tiny_config(tmp_path / name, corpus, train_steps=steps, **overrides),
                            show_progress=False)
    trainer.fit()
    return [v.numpy() for v in trainer.model.weights]


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(tmp_path, corpus):
    whole = trained_weights(tmp_path, corpus, "whole", batch_size=8, grad_accum=1)
    accumulated = trained_weights(tmp_path, corpus, "accumulated", batch_size=8, grad_accum=4)
    for a, b in zip(whole, accumulated):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, corpus, precision, restore_precision_policy):
    config = tiny_config(tmp_path / precision, corpus, mixed_precision=precision, train_steps=6)
    result = train(config, show_progress=False)
    assert np.isfinite(result["loss"]) and np.isfinite(result["validation_nll"])
    # fp16 needs loss scaling (and logs the scale); bf16 has fp32's range and does not.
    assert ("loss_scale" in scalar_events(tmp_path / precision / "train")) == (precision == "fp16")


class NonFiniteAfter:
    """Wraps an objective so that every loss from call `start` on is NaN (a diverging run)."""

    def __init__(self, objective, start):
        self.objective, self.start, self.calls = objective, start, tf.Variable(0)

    def compute(self, batch, model, training):
        output = self.objective.compute(batch, model, training)
        if training:
            self.calls.assign_add(1)
        poison = tf.where(self.calls > self.start, np.nan, 0.0)
        return ObjectiveOutput(output.losses + poison, output.metrics)

    def summarize(self, means):
        return self.objective.summarize(means)

    def batch_plans(self, train_data, first_step):
        return self.objective.batch_plans(train_data, first_step)


def test_non_finite_steps_are_skipped_then_the_run_stops_keeping_the_last_checkpoint(tmp_path, corpus):
    config = tiny_config(tmp_path / "nan", corpus, train_steps=20, checkpoint_every=3, max_bad_steps=3,
                         jit_compile=False)
    trainer = build_trainer(config, show_progress=False)
    trainer.objective = NonFiniteAfter(trainer.objective, start=4)
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps at step 7"):
        trainer.fit()
    # Steps 5-7 were not applied: the weights are still those of step 4.
    assert int(trainer.optimizer.iterations.numpy()) == 4
    assert all(np.isfinite(v.numpy()).all() for v in trainer.model.weights)
    assert tf.train.latest_checkpoint(str(tmp_path / "nan" / "checkpoints")).endswith("ckpt-3")


@pytest.mark.slow
def test_one_replica_and_two_cpu_replicas_give_the_same_parameters(tmp_path, corpus):
    common = [*TINY_FLAGS, "--data", corpus, "--train_steps", "2", "--batch_size", "8"]
    train_in_process([*common, "--model_dir", str(tmp_path / "one")])
    # Two logical CPUs must be set up before TensorFlow starts: a new process.
    two = run_train([*common, "--model_dir", str(tmp_path / "two"), "--strategy", "mirrored",
                     "--cpu_replicas", "2"])
    assert two.returncode == 0, two.stderr
    reader_one = tf.train.load_checkpoint(str(tmp_path / "one" / "checkpoints"))
    reader_two = tf.train.load_checkpoint(str(tmp_path / "two" / "checkpoints"))
    names = [n for n in reader_one.get_variable_to_shape_map() if n.startswith("weights/")]
    assert len(names) > 10
    for name in names:
        np.testing.assert_allclose(reader_one.get_tensor(name), reader_two.get_tensor(name), atol=1e-5,
                                   err_msg=name)



@pytest.mark.slow
def test_rerunning_a_finished_run_keeps_its_result_and_continues_when_asked(tmp_path, corpus):
    first = train(tiny_config(tmp_path / "done", corpus, train_steps=4), show_progress=False)
    stored = open(tmp_path / "done" / "train_result.json").read()
    assert train(tiny_config(tmp_path / "done", corpus, train_steps=4), show_progress=False) == first
    assert open(tmp_path / "done" / "train_result.json").read() == stored
    longer = train(tiny_config(tmp_path / "done", corpus, train_steps=6), show_progress=False)
    assert longer["step"] == 6
