"""What an objective is: a batch and the models in, per-example losses and metric sums out.

The trainer alone reduces losses (by the global batch), applies gradients, distributes, logs and
checkpoints; an objective never touches the optimizer or the strategy. Metrics are returned as
(numerator, denominator) sums over the local batch so that the trainer can add them up across
replicas, micro-batches and log intervals and divide once: a token-weighted mean stays exact
however the batch was split.
"""
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfpref.models.sampling import DEFAULT_BANNED_IDS


@dataclass
class ObjectiveOutput:
    losses: tf.Tensor                             # float32 [batch]: per-example loss
    metrics: dict = field(default_factory=dict)   # name -> (numerator, denominator) scalar sums


class Objective:
    """Base class. Subclasses set `name` and implement `compute`.

    Objectives that own trainable layers (a value head, a classifier head) list them in
    `trainable_layers` so the trainer optimises and checkpoints them with the model.
    """

    name = ""

    def __init__(self, config):
        self.config = config  # the whole RunConfig: objectives may need data or model facts
        self.trainable_layers = []

    # Data the objective trains on: packed windows of a corpus, or one padded example per chunk
    # with a class label (classification).
    packed = True
    needs_labels = False
    # Feedback objectives train on segments scored by --scorer: batches carry `token_scores`.
    needs_scores = False

    @classmethod
    def check_config(cls, config):
        """Raise UserError if the RunConfig `config` does not suit this objective."""

    @classmethod
    def select_segments(cls, config, scores):
        """Bool mask over the training split's segment scores: which segments to train on."""
        return np.ones(len(scores), bool)

    @classmethod
    def segment_prefixes(cls, config, scores, rng, training):
        """Control token id to put before each segment (-1: none), or None for no control tokens."""
        return None

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        """{split: data or None} of the `wanted` splits: TokenData of the packed corpus by default
        (scored for objectives that need scores)."""
        from tfpref.data.loading import load_text_data

        return load_text_data(config, cls, wanted, show_progress)

    # True when generation can be asked for aligned or misaligned text (conditional training).
    controllable = False

    # Generation: what goes after BOS, what may not be sampled, and an embedding offset, when
    # asking for aligned (or misaligned) text.
    def prompt_prefix(self, aligned=True):
        return ()

    def banned_ids(self, aligned=True):
        return DEFAULT_BANNED_IDS

    def condition(self, batch_size, aligned=True):
        """Embedding offset [batch, d_model] to generate with, or None."""
        return None

    # ---- hooks of the training run (tfpref.training.run) ------------------------------------

    def checkpoint_trackables(self):
        """{name: tf.Variable or trackable} of objective state saved with each checkpoint."""
        return {}

    def prepare(self, trainer):
        """Called once the trainer is built and its checkpoint restored, before training."""

    def train_batches(self, trainer, first_step):
        """Iterable of distributed batches for steps first_step + 1, first_step + 2, ...: by
        default the training data in the seeded order of `batch_order`."""
        from tfpref.data.pipeline import batch_order, distributed_dataset

        train = self.config.train
        order = batch_order(trainer.train_data.num_examples, train.train_steps, train.batch_size, train.seed)
        return distributed_dataset(trainer.strategy, trainer.train_data, order[first_step:],
                                   train.grad_accum, first_step=first_step)

    def finish(self, trainer):
        """Called when training ends (not when interrupted); returns results to report."""
        return {}

    # A reward model's head: runs that have one export a `reward` signature.
    reward_head = None
    # Fine-tunes --init_from with preferences (DPO, RL): evaluate.py compares it with that reference.
    fine_tunes_policy = False

    def trainable_variables(self, model):
        """What the optimizer updates: the model (unless --freeze_backbone) and the objective's layers."""
        backbone = [] if self.config.train.freeze_backbone else model.trainable_variables
        return backbone + [v for layer in self.trainable_layers for v in layer.trainable_variables]

    def logits(self, batch, model, training):
        """Class logits [batch, classes], for objectives with `needs_labels`."""
        raise NotImplementedError

    def compute(self, batch, model, training):
        """ObjectiveOutput for `batch` ({'token_ids', 'padding_mask', ...}, one micro-batch)."""
        raise NotImplementedError

    def summarize(self, means):
        """Derived metrics for logging, from {name: numerator/denominator}."""
        return means
