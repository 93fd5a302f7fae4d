"""Checkpoints: the task model's weights, optimizer, step (= data position), loss scale, RNG state
and the objective's state.

Weights are saved as a flat {variable path: variable} mapping (`tfpref.runs.weights_by_path`).
Dropout randomness lives in the layers' seed-generator variables, saved in order as `rng/<i>`.
Under multi-worker training every worker must take part in a save; only the chief writes into the
run directory, the others write to a scratch directory that is deleted right away.
"""
import os
import shutil

import tensorflow as tf

from tfpref.runs import checkpoint_dir, weights_by_path


def rng_states(*layers):
    """{index: seed-generator state} of `layers`, in creation order."""
    states = [v for layer in layers for v in layer.variables if v.path.endswith("seed_generator_state")]
    return {str(i): v for i, v in enumerate(states)}


class Checkpointer:
    """Saves and restores `layers` (a task model's `parts`) plus other trackables.

    Example:
        >>> checkpointer = Checkpointer("logs/run", keep=3, is_chief=True, layers=model.parts,
        ...                             optimizer=optimizer, step=step)
    """

    def __init__(self, model_dir, keep, is_chief, worker_id=0, layers=(), **trackables):
        self.checkpoint = tf.train.Checkpoint(weights=weights_by_path(*layers), rng=rng_states(*layers),
                                              **trackables)
        self.is_chief = is_chief
        self.directory = checkpoint_dir(model_dir)
        self.scratch = None if is_chief else os.path.join(model_dir, ".scratch", f"worker_{worker_id}")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory if is_chief else self.scratch, max_to_keep=keep)

    @property
    def latest(self):
        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self):
        """Restore the newest checkpoint of the run directory; returns its path or None."""
        path = self.latest
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step):
        path = self.manager.save(checkpoint_number=step)
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return path
