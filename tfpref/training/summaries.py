"""TensorBoard scalars and text under <model_dir>/train and /eval, and the console progress bar."""
import os

import keras
import tensorflow as tf


class RunLogger:
    def __init__(self, model_dir, total_steps, is_chief, show_progress=True):
        def writer(split):
            if not is_chief:
                return tf.summary.create_noop_writer()
            return tf.summary.create_file_writer(os.path.join(model_dir, split))

        self.writers = {"train": writer("train"), "eval": writer("eval")}
        self.progress = keras.utils.Progbar(total_steps, stateful_metrics=["loss", "tok/s"],
                                            verbose=1 if (show_progress and is_chief) else 0)

    def scalars(self, split, step, values):
        with self.writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self.writers[split].flush()  # so `tensorboard --logdir logs` shows a run live

    def text(self, split, step, name, markdown):
        with self.writers[split].as_default(step=step):
            tf.summary.text(name, markdown)
        self.writers[split].flush()

    def advance(self, step, loss, tokens_per_second):
        self.progress.update(step, values=[("loss", loss), ("tok/s", tokens_per_second)])

    def close(self):
        for writer in self.writers.values():
            writer.close()
