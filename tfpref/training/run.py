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
import numpy as np
import tensorflow as tf

from tfpref.config import CONTROLLABLE_OBJECTIVES
from tfpref.data.tokenizers import save_run_tokenizer, tokenizer_for
from tfpref.errors import UserError
from tfpref.evaluation.misalignment import controllability
from tfpref.models import build_task_model
from tfpref.objectives import OBJECTIVES, build_objective
from tfpref.runs import check_run_dir, load_token_data, resolve_config, restore_weights, write_config
from tfpref.training.checkpoints import Checkpointer
from tfpref.training.export import export_model
from tfpref.training.optimization import DynamicLossScale, make_optimizer
from tfpref.training.strategy import is_chief, make_strategy
from tfpref.training.summaries import RunLogger
from tfpref.training.trainer import Trainer

RESULT_FILE = "train_result.json"


def set_precision_policy(mixed_precision):
    """Set Keras's global dtype policy; returns True when fp16 loss scaling is needed."""
    if mixed_precision == "auto":
        mixed_precision = "fp16" if tf.config.list_physical_devices("GPU") else "bf16"
    policy = {"no": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[mixed_precision]
    keras.mixed_precision.set_global_policy(policy)
    return mixed_precision == "fp16"


def build_trainer(config, show_progress=True):
    """A ready Trainer for `config`: config resolved, run dir checked, data loaded, models built,
    checkpoint restored.

    Writes `<model_dir>/config.json` (chief only), after every input has been read successfully.
    """
    config = resolve_config(config)
    resuming = check_run_dir(config)
    strategy = make_strategy(config.runtime)
    if config.train.batch_size % (config.train.grad_accum * strategy.num_replicas_in_sync):
        raise UserError(f"--batch_size {config.train.batch_size} is not divisible by --grad_accum "
                        f"{config.train.grad_accum} x {strategy.num_replicas_in_sync} replicas")
    chief = is_chief(strategy)
    loaded = load_token_data(config, OBJECTIVES[config.train.objective], show_progress=show_progress)
    train_data, eval_data = loaded["train"], loaded["validation"]
    loss_scaling = set_precision_policy(config.train.mixed_precision)
    keras.utils.set_random_seed(config.train.seed)

    with strategy.scope():
        model = build_task_model(config, seed=config.train.seed)
        objective = build_objective(config)
        optimizer = make_optimizer(config.train)
        optimizer.build(model.trainable_weights_of(config.train.freeze_backbone))
        loss_scale = DynamicLossScale(enabled=loss_scaling)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    worker_id = getattr(getattr(strategy, "cluster_resolver", None), "task_id", 0) or 0
    checkpointer = Checkpointer(config.model_dir, config.runtime.keep_checkpoints, chief, worker_id,
                                layers=model.parts, optimizer=optimizer, step=step, loss_scale=loss_scale,
                                **objective.checkpoint_trackables())
    restored = checkpointer.restore_latest() if resuming else None
    if not restored and config.train.init_from:
        print(f"Initialising from {restore_weights([model.backbone], config.train.init_from)}", flush=True)

    logger = RunLogger(config.model_dir, config.train.train_steps, chief, show_progress)
    if chief:  # only now, with data and models in hand, is anything written to the run directory
        # A subword run's vocabulary (trained, or its --init_from run's) before config.json, which marks
        # a run directory: a directory with a config holds its vocabulary.
        save_run_tokenizer(config)
        write_config(config)
        if not restored:
            logger.text("train", 0, "config", f"```\n{config.to_json()}\n```")
        for name, arrays in objective.artifacts(train_data, eval_data).items():
            path = os.path.join(config.model_dir, name)
            if not os.path.exists(path):
                np.savez(path, **arrays)
    if restored:
        print(f"Resuming {config.model_dir} from step {int(step.numpy())}", flush=True)
    for name, markdown in objective.prepare(model).items():
        logger.text("train", 0, name, markdown)
    return Trainer(config, strategy, model, objective, optimizer, loss_scale, step,
                   train_data, eval_data, logger, checkpointer)


def train(config, show_progress=True):
    """Train (or resume) the run `config` describes. Returns the final metrics dict."""
    trainer = build_trainer(config, show_progress)
    config = trainer.config  # the resolved config
    logger, model = trainer.logger, trainer.model
    result_path = os.path.join(config.model_dir, RESULT_FILE)
    if int(trainer.step.numpy()) >= config.train.train_steps and os.path.exists(result_path):
        logger.close()
        print(f"{config.model_dir} is already trained to step {int(trainer.step.numpy())}; "
              f"raise --train_steps to continue.", flush=True)
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    chief = trainer.checkpointer.is_chief
    try:
        result = trainer.fit()
        result["parameters"] = int(model.count_params())
        finished = "interrupted_by" not in result
        if finished:
            final = trainer.objective.finish(model, trainer.train_data)
            if final:  # it may have set state of the model: every worker takes part in the save
                trainer.checkpointer.save(result["step"])
                result.update(final)
            if chief:
                _write_result_files(config.model_dir, trainer.objective.result_files, final)
        if finished and chief and config.runtime.export:
            result["export"] = export_model(model, config.model_dir, result["step"], config.data.seq_len,
                                            tokenizer_for(config))
        if (finished and chief and config.train.objective in CONTROLLABLE_OBJECTIVES
                and config.runtime.check_samples > 0):
            result["controllability"] = controllability(model, config.feedback.scorer, config.runtime.check_samples,
                                                        jit_compile=config.runtime.jit_compile,
                                                        tokenizer=tokenizer_for(config),
                                                        threshold=config.feedback.threshold)
            logger.scalars("eval", result["step"], result["controllability"])
    finally:
        logger.close()
    if chief:
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def _write_result_files(model_dir, result_files, results):
    for key, name in result_files.items():
        if key in results:
            with open(os.path.join(model_dir, name), "w", encoding="utf-8") as f:
                json.dump(results[key], f, indent=2)
