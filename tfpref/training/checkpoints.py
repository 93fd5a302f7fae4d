"""Checkpoints: model, objective heads, optimizer, step (= data position), loss scale, RNG state.

Dropout randomness lives in the Keras layers' seed-generator variables, so it is saved with the
model. Under multi-worker training every worker must take part in a save; only the chief writes
into the run directory, the others write to a scratch directory that is deleted right away.
"""
import os
import shutil

import tensorflow as tf


class Checkpointer:
    def __init__(self, model_dir, keep, is_chief, worker_id=0, **trackables):
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.is_chief = is_chief
        self.directory = os.path.join(model_dir, "checkpoints")
        self.scratch = None if is_chief else os.path.join(model_dir, ".scratch", f"worker_{worker_id}")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory if is_chief else self.scratch, max_to_keep=keep)
        self.reader = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=keep)

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
