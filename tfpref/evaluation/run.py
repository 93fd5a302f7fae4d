"""Evaluate a run directory on a held-out split: the library entry point behind evaluate.py.

Example:
    >>> from tfpref.evaluation.run import evaluate_run
    >>> metrics = evaluate_run("logs/transformer-mle", split="test")
"""
import dataclasses
import json
import math
import os

import numpy as np
import tensorflow as tf

from tfpref.config import POLICY_OBJECTIVES
from tfpref.data.batching import row_batches
from tfpref.data.scored import load_scored_token_data
from tfpref.errors import UserError
from tfpref.evaluation.generation import SAMPLES_FILE, load_prompts, sample_and_score, split_prompts
from tfpref.evaluation.metrics import classification_report
from tfpref.evaluation.misalignment import UNCONDITIONAL_SAMPLES_FILE, evaluate_misalignment
from tfpref.evaluation.policy import POLICY_SAMPLES_FILE, PolicyEvalSettings, evaluate_policy
from tfpref.models import Classifier, RewardModel
from tfpref.objectives import OBJECTIVES, build_objective
from tfpref.runs import checkpoint_step, load_run, load_token_data

METRICS_FILE = "metrics.json"


def _batches(data, batch_size):
    """Every example of `data` once, in order, the last batch possibly smaller (metric sums must not
    count any example twice)."""
    gather = data.gatherer()
    for indices, _ in row_batches(data.num_examples, batch_size, full=False):
        yield gather(tf.constant(indices), tf.constant(indices))


def load_eval_data(config, split, scorer=None):
    """TokenData of `split`; with a scorer, scored too (so LM loss on aligned text can be reported)."""
    objective_cls = OBJECTIVES[config.train.objective]
    if scorer is None or config.train.objective == "classify":
        return load_token_data(config, objective_cls, (split,))[split]
    scored = dataclasses.replace(config, feedback=dataclasses.replace(config.feedback, scorer=scorer))
    hooks = objective_cls if objective_cls.needs_scores else OBJECTIVES["mle"]
    return load_scored_token_data(scored, hooks, (split,))[split]


def evaluate_run(model_dir, split="validation", batch_size=32, max_batches=None, sampling=None,
                 misalignment=None, policy=None):
    """Metrics of the run's latest checkpoint on `split`, written to <model_dir>/eval/.

    `misalignment` (a MisalignmentSettings) samples unconditionally, scores the samples and adds
    the misalignment metrics (tfpref.evaluation.misalignment); the held-out data is scored too.
    `sampling` (a SamplingSettings) also samples completions of prompts for language-model runs:
    samples.jsonl plus diversity and, where references exist, BLEU/ROUGE-L in the metrics.
    Runs that fine-tune a policy (DPO, RL) are compared with their reference policy instead
    (`policy`, a PolicyEvalSettings; tfpref.evaluation.policy), and never sampled otherwise;
    reward models are not sampled either.
    """
    sampling = sampling if sampling is not None and sampling.num_samples > 0 else None
    if sampling is not None:
        sampling.validate()
        prompts = (load_prompts(sampling.prompts, sampling.num_samples) if sampling.prompts else None)
    if misalignment is not None:
        misalignment.validate()
    config, model, checkpoint = load_run(model_dir)
    objective = build_objective(config)
    fine_tunes_policy = config.train.objective in POLICY_OBJECTIVES
    classifier = isinstance(model, Classifier)
    if fine_tunes_policy or isinstance(model, RewardModel):
        sampling = misalignment = None  # a reward model does not generate; a policy has its own report
    data = load_eval_data(config, split, misalignment.scorer if misalignment is not None else None)
    if (data is None or data.num_examples == 0) and not fine_tunes_policy:
        raise UserError(f"--split {split}: no {split} examples in {config.data.data}")

    @tf.function(jit_compile=True, reduce_retracing=True)
    def evaluate_batch(batch):
        output = objective.compute(batch, model, training=False)
        sums = {"loss": (tf.reduce_sum(output.losses), tf.cast(tf.size(output.losses), tf.float32))}
        sums.update(output.metrics)
        predictions = (tf.argmax(model(batch["token_ids"], batch["padding_mask"]), -1, output_type=tf.int32)
                       if classifier else tf.zeros([0], tf.int32))
        return sums, predictions

    totals, predictions, labels, examples = {}, [], [], 0
    for i, batch in enumerate(_batches(data, batch_size) if data is not None else ()):
        if max_batches is not None and i >= max_batches:
            break
        examples += int(batch["token_ids"].shape[0])
        sums, batch_predictions = evaluate_batch(batch)
        for name, (numerator, denominator) in sums.items():
            previous = totals.get(name, (0.0, 0.0))
            totals[name] = (previous[0] + float(numerator), previous[1] + float(denominator))
        predictions.append(batch_predictions.numpy())
        if "label" in batch:
            labels.append(batch["label"].numpy())
    metrics = objective.summarize({name: n / d for name, (n, d) in totals.items() if d > 0})
    report = {"split": split, "checkpoint": os.path.basename(checkpoint),
              "step": checkpoint_step(checkpoint), "examples": examples, "metrics": metrics}
    if classifier:
        class_report, matrix = classification_report(np.concatenate(labels), np.concatenate(predictions),
                                                     config.classes)
        metrics.update(class_report)
        report["classes"] = config.classes
        report["confusion_matrix"] = matrix.tolist()
    if fine_tunes_policy:
        metrics.update(evaluate_policy(config, model, policy or PolicyEvalSettings(), os.path.join(model_dir, "eval"),
                                       split))
        report["policy_samples"] = POLICY_SAMPLES_FILE
    if sampling is not None and not classifier:
        if prompts is None:
            prompts = split_prompts(data, sampling.num_samples, sampling.max_new_tokens)
        metrics.update(sample_and_score(model, prompts, sampling, os.path.join(model_dir, "eval")))
        report["samples"] = {"count": len(prompts), "file": SAMPLES_FILE,
                             **{k: v for k, v in vars(sampling).items() if k != "batch_size"}}
    if misalignment is not None and not classifier:
        metrics.update(evaluate_misalignment(model, misalignment, os.path.join(model_dir, "eval")))
        report["unconditional_samples"] = {"file": UNCONDITIONAL_SAMPLES_FILE, **vars(misalignment)}
    write_report(model_dir, report)
    return report


def write_report(model_dir, report):
    """metrics.json under <model_dir>/eval, and the same scalars in TensorBoard."""
    directory = os.path.join(model_dir, "eval")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, METRICS_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default(step=report["step"]):
        for name, value in report["metrics"].items():
            if math.isfinite(value):
                tf.summary.scalar(f"{report['split']}/{name}", value)
        if "samples" in report:
            tf.summary.text(f"{report['split']}/samples", _samples_markdown(directory))
    writer.close()


def _samples_markdown(directory, count=4):
    """The first samples of samples.jsonl as Markdown for TensorBoard's text tab."""
    with open(os.path.join(directory, SAMPLES_FILE), encoding="utf-8") as f:
        samples = [json.loads(line) for _, line in zip(range(count), f)]
    return "\n\n".join(f"**prompt** `{s['prompt']!r}`\n\n```\n{s['prompt']}{s['completion']}\n```"
                       for s in samples)


def format_report(report):
    """A readable table of a report."""
    rows = [f"{name:<28} {value:>10.4f}" for name, value in report["metrics"].items()]
    lines = [f"{report['split']} split, {report['examples']} examples, {report['checkpoint']}", *rows]
    if "samples" in report:
        lines.append(f"{report['samples']['count']} samples in {report['samples']['file']} "
                     f"(temperature {report['samples']['temperature']}, top_k {report['samples']['top_k']}, "
                     f"top_p {report['samples']['top_p']}, {report['samples']['max_new_tokens']} new tokens)")
    if "unconditional_samples" in report:
        settings = report["unconditional_samples"]
        lines.append(f"{settings['num_samples']} unconditional samples scored by {settings['scorer']} in "
                     f"{settings['file']} (temperature {settings['temperature']}, top_p {settings['top_p']}, "
                     f"{settings['max_new_tokens']} new tokens)")
    if "confusion_matrix" in report:
        names = report["classes"]
        width = max(len(n) for n in names) + 2
        lines.append("confusion matrix (rows: true, columns: predicted)")
        lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
        for name, row in zip(names, report["confusion_matrix"]):
            lines.append(f"{name:<{width}}" + "".join(f"{count:>{width}}" for count in row))
    return "\n".join(lines)
