"""What an objective is: a batch and the models in, per-example losses and metric sums out.

The trainer alone reduces losses (by the global batch), applies gradients, distributes, logs and
checkpoints; an objective never touches the optimizer, the strategy, the checkpoints or the run
directory: it says what to train on (`batch_plans`) and what to save (`checkpoint_trackables`,
`artifacts`, `result_files`), and the run does it. Metrics are returned as
(numerator, denominator) sums over the local batch so that the trainer can add them up across
replicas, micro-batches and log intervals and divide once: a token-weighted mean stays exact
however the batch was split.
"""
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfpref.data.loading import load_text_data
from tfpref.data.pipeline import batch_order


@dataclass
class ObjectiveOutput:
    losses: tf.Tensor                             # float32 [batch]: per-example loss
    metrics: dict = field(default_factory=dict)   # name -> (numerator, denominator) scalar sums


@dataclass
class BatchPlan:
    """Training batches the trainer distributes: rows `order` [steps, global batch] of `data`, for
    steps first_step + 1, first_step + 2, ...; `texts` are Markdown to log at the first of them."""
    data: object
    order: np.ndarray
    first_step: int
    texts: dict = field(default_factory=dict)


class Objective:
    """Base class. Subclasses set `name` and implement `compute`.

    The models an objective trains are task models (tfpref.models.tasks): heads live there, not
    here. What an objective may keep is state that is not a weight (a KL coefficient, a baseline),
    listed in `checkpoint_trackables` so that it resumes exactly.
    """

    name = ""
    # Feedback objectives train on segments scored by --scorer: batches carry `token_scores`.
    needs_scores = False
    # Trains on which segments are aligned (--threshold): refuses a threshold with almost none of one kind.
    uses_threshold = False
    # {key of `finish`'s results: file name}: results the run writes to its directory as JSON.
    result_files = {}

    def __init__(self, config):
        self.config = config  # the whole RunConfig: objectives may need data or model facts

    # ---- data (classmethods: the run loads data before it builds anything) -------------------

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
        return load_text_data(config, cls, wanted, show_progress)

    # ---- hooks of the training run (tfpref.training.run) ------------------------------------

    def checkpoint_trackables(self):
        """{name: tf.Variable or trackable} of objective state saved with each checkpoint."""
        return {}

    def prepare(self, model):
        """Called once the model is built and its checkpoint restored, before training. Returns
        {name: Markdown} to log as TensorBoard text."""
        return {}

    def artifacts(self, train_data, eval_data):
        """{file name: {name: array}} the run saves (as .npz, once) in its directory."""
        return {}

    def batch_plans(self, train_data, first_step):
        """BatchPlans for steps first_step + 1, first_step + 2, ...: by default the training data in
        the seeded order of `batch_order`."""
        train = self.config.train
        order = batch_order(train_data.num_examples, train.train_steps, train.batch_size, train.seed)
        yield BatchPlan(train_data, order[first_step:], first_step)

    def finish(self, model, train_data):
        """Called when training ends (not when interrupted); may set non-trained state of `model`
        (a reward model's normalisation). Returns results to report."""
        return {}

    def compute(self, batch, model, training):
        """ObjectiveOutput for `batch` ({'token_ids', 'padding_mask', ...}, one micro-batch)."""
        raise NotImplementedError

    def summarize(self, means):
        """Derived metrics for logging, from {name: numerator/denominator}."""
        return means
