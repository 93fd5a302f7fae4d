"""Set up and run a training job from a RunConfig: the library entry point behind train.py.

Example:
    >>> from tfpref.config import RunConfig
    >>> from tfpref.training.run import train
    >>> config = RunConfig(model_dir="logs/tiny")
    >>> config.train.train_steps = 10
    >>> result = train(config)   # {'step': 10, 'loss': ..., 'validation_nll': ...}
"""
import json
import os

import keras
import tensorflow as tf

from tfpref.config import RunConfig, config_path, incompatible_fields
from tfpref.errors import UserError
from tfpref.models import build_model
from tfpref.objectives import build_objective
from tfpref.training.checkpoints import Checkpointer, restore_weights
from tfpref.training.export import export_model
from tfpref.training.optimization import DynamicLossScale, make_optimizer
from tfpref.training.strategy import is_chief, make_strategy
from tfpref.training.summaries import RunLogger
from tfpref.training.trainer import Trainer

RESULT_FILE = "train_result.json"


def check_run_dir(config):
    """Refuse to reuse a run directory whose stored config describes a different run."""
    path = config_path(config.model_dir)
    if not os.path.exists(path):
        if os.path.isdir(os.path.join(config.model_dir, "checkpoints")):
            raise UserError(f"--model_dir {config.model_dir} has checkpoints but no config.json; "
                            f"refusing to guess what they are")
        return False
    changed = incompatible_fields(RunConfig.load(path), config)
    if changed:
        raise UserError(f"--model_dir {config.model_dir} holds a different run (changed: "
                        f"{', '.join(changed)}); use a new --model_dir or the original flags")
    return True


def set_precision_policy(mixed_precision):
    """Set Keras's global dtype policy; returns True when fp16 loss scaling is needed."""
    if mixed_precision == "auto":
        mixed_precision = "fp16" if tf.config.list_physical_devices("GPU") else "bf16"
    policy = {"no": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[mixed_precision]
    keras.mixed_precision.set_global_policy(policy)
    return mixed_precision == "fp16"


def adopt_init_from(config):
    """--init_from: the new run uses the source run's model architecture. Dropout is not part of
    it (no weight depends on it): the new run's --dropout applies."""
    source_dir = config.train.init_from
    if not source_dir:
        return
    if not os.path.exists(config_path(source_dir)):
        raise UserError(f"--init_from {source_dir}: not a run directory (no config.json)")
    dropout = config.model.dropout
    config.model = RunConfig.load(config_path(source_dir)).model
    config.model.dropout = dropout


def load_token_data(config, wanted=("train", "validation"), show_progress=True):
    """{split: data or None} for the `wanted` splits, in the form the objective trains on."""
    from tfpref.objectives import OBJECTIVES

    return OBJECTIVES[config.train.objective].load_data(config, wanted, show_progress)


def build_trainer(config, show_progress=True):
    """A ready Trainer for `config`: run dir checked, data loaded, models built, checkpoint restored.

    Writes `<model_dir>/config.json` (chief only), after every input has been read successfully.
    """
    config.validate()
    adopt_init_from(config)
    resuming = check_run_dir(config)
    strategy = make_strategy(config.runtime)
    if config.train.batch_size % (config.train.grad_accum * strategy.num_replicas_in_sync):
        raise UserError(f"--batch_size {config.train.batch_size} is not divisible by --grad_accum "
                        f"{config.train.grad_accum} x {strategy.num_replicas_in_sync} replicas")
    chief = is_chief(strategy)
    loaded = load_token_data(config, show_progress=show_progress)
    train_data, eval_data = loaded["train"], loaded["validation"]
    loss_scaling = set_precision_policy(config.train.mixed_precision)
    keras.utils.set_random_seed(config.train.seed)

    with strategy.scope():
        model = build_model(config.model, seed=config.train.seed)
        objective = build_objective(config)
        optimizer = make_optimizer(config.train)
        optimizer.build(objective.trainable_variables(model))
        loss_scale = DynamicLossScale(enabled=loss_scaling)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    worker_id = getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0) or 0
    checkpointer = Checkpointer(config.model_dir, config.runtime.keep_checkpoints, chief, worker_id,
                                layers=[model, *objective.trainable_layers], optimizer=optimizer,
                                step=step, loss_scale=loss_scale, **objective.checkpoint_trackables())
    restored = checkpointer.restore_latest() if resuming else None
    if not restored and config.train.init_from:
        print(f"Initialising from {restore_weights([model], config.train.init_from)}", flush=True)

    logger = RunLogger(config.model_dir, config.train.train_steps, chief, show_progress)
    if chief:  # only now, with data and models in hand, is anything written to the run directory
        os.makedirs(config.model_dir, exist_ok=True)
        with open(config_path(config.model_dir), "w", encoding="utf-8") as f:
            f.write(config.to_json())
        if not restored:
            logger.text("train", 0, "config", f"```\n{config.to_json()}\n```")
    if restored:
        print(f"Resuming {config.model_dir} from step {int(step.numpy())}", flush=True)

    trainer = Trainer(config, strategy, model, objective, optimizer, loss_scale, step,
                      train_data, eval_data, logger, checkpointer)
    objective.prepare(trainer)
    return trainer


def train(config, show_progress=True):
    """Train (or resume) the run `config` describes. Returns the final metrics dict."""
    trainer = build_trainer(config, show_progress)
    logger, model = trainer.logger, trainer.model
    result_path = os.path.join(config.model_dir, RESULT_FILE)
    if int(trainer.step.numpy()) >= config.train.train_steps and os.path.exists(result_path):
        logger.close()
        print(f"{config.model_dir} is already trained to step {int(trainer.step.numpy())}; "
              f"raise --train_steps to continue.", flush=True)
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    try:
        result = trainer.fit()
        result["parameters"] = int(model.count_params())
        finished = trainer.checkpointer.is_chief and "interrupted_by" not in result
        objective = trainer.objective
        if "interrupted_by" not in result:  # every worker: finishing may save a checkpoint
            result.update(objective.finish(trainer))
        if finished and config.runtime.export:
            head = objective.head if objective.needs_labels else None
            result["export"] = export_model(model, config.model_dir, result["step"], head, config.classes,
                                            config.data.seq_len, objective)
        if finished and objective.controllable and config.runtime.check_samples > 0:
            from tfpref.evaluation.misalignment import controllability

            result["controllability"] = controllability(model, objective, config.feedback.scorer,
                                                        config.runtime.check_samples,
                                                        jit_compile=config.runtime.jit_compile)
            logger.scalars("eval", result["step"], result["controllability"])
    finally:
        logger.close()
    if trainer.checkpointer.is_chief:
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result
