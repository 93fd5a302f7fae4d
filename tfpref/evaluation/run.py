"""Evaluate a run directory on a held-out split or on a whole file: the library entry point behind
evaluate.py.

Example:
    >>> from tfpref.evaluation.run import evaluate_run
    >>> metrics = evaluate_run("logs/transformer-mle", split="test")
    >>> by_source = evaluate_run("logs/rm", data="human_pairs.jsonl", group_by="source")
"""
import dataclasses
import json
import math
import os
import re
import tempfile

import numpy as np
import tensorflow as tf

from tfpref.config import POLICY_OBJECTIVES, RL_OBJECTIVES
from tfpref.data.batching import row_batches
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError
from tfpref.evaluation.files import (ALL, VALUE_LOSSES, evaluation_config, group_records, implied_pair_sums,
                                     load_eval_data, load_file_data, rated_items, write_records)
from tfpref.evaluation.generation import SAMPLES_FILE, load_prompts, sample_and_score, split_prompts
from tfpref.evaluation.metrics import classification_report
from tfpref.evaluation.misalignment import UNCONDITIONAL_SAMPLES_FILE, evaluate_misalignment
from tfpref.evaluation.policy import POLICY_SAMPLES_FILE, PolicyEvalSettings, evaluate_policy
from tfpref.models import Classifier, RewardModel
from tfpref.objectives import build_objective
from tfpref.runs import checkpoint_step, load_run

METRICS_FILE = "metrics.json"


def _batches(data, batch_size):
    """Every example of `data` once, in order, the last batch possibly smaller (metric sums must not
    count any example twice)."""
    gather = data.gatherer()
    for indices, _ in row_batches(data.num_examples, batch_size, full=False):
        yield gather(tf.constant(indices), tf.constant(indices))


def report_dir(model_dir, data=None):
    """Where `evaluate_run` writes: <model_dir>/eval, or <model_dir>/eval/<file stem> for a --data
    file (so a file's report never replaces the run's own held-out report or samples)."""
    directory = os.path.join(model_dir, "eval")
    if not data:
        return directory
    name = os.path.basename(os.path.normpath(str(data)))
    stem = re.sub(r"[^A-Za-z0-9._=-]+", "_", os.path.splitext(name)[0] or name)
    return os.path.join(directory, stem)


def evaluate_run(model_dir, split="validation", batch_size=32, max_batches=None, sampling=None,
                 misalignment=None, policy=None, data=None, group_by=None):
    """Metrics of the run's latest checkpoint on `split`, or on every record of the file `data`.

    Args:
        model_dir: a run directory (config.json and checkpoints).
        split: the held-out split of the run's own data ("validation" or "test"); not used with `data`.
        batch_size, max_batches: examples per evaluation batch; stop after this many batches.
        sampling: a SamplingSettings: language-model runs also complete prompts (samples.jsonl,
            diversity and, where references exist, BLEU/ROUGE-L in the metrics).
        misalignment: a MisalignmentSettings: samples unconditionally, scores the samples and adds
            the misalignment metrics (tfpref.evaluation.misalignment); the evaluated data is scored too.
        policy: a PolicyEvalSettings: runs that fine-tune a policy (DPO, RL) are compared with their
            reference policy on held-out prompts (tfpref.evaluation.policy) and never sampled
            otherwise; reward models are not sampled either. With `data`, a DPO run is compared on
            the file's prompts only when `policy` is given (its implicit-reward accuracy and margin
            on the file's pairs are the evaluation); an RL run always is (it has nothing else).
        data: a file of the run's kind (text, labelled JSONL, preference records, prompts), a whole
            of which is evaluated: the run's config with `data.data` replaced. Reported as split
            "all", with "data"; written to <model_dir>/eval/<file stem>/ (`report_dir`). A reward
            model is evaluated by what the file holds (tfpref.evaluation.files): pairwise accuracy
            on pairs and rankings; on ratings and clicks, Pearson's `correlation` between reward and
            rating and the `accuracy` on the pairs the ratings imply ("implied_pairs" of them).
        group_by: with `data` (JSONL), a record field: the records of each of its values are also
            evaluated as a file of their own, under report["groups"][value] = {"records", "examples",
            "metrics", ...}; records without the field form the group "(missing)".

    Returns the report written to <report_dir>/metrics.json (its scalars also go to TensorBoard
    there): {"split", "checkpoint", "step", "examples", "metrics", ...}.

    Example:
        >>> report = evaluate_run("logs/rm", data="human_pairs.jsonl", group_by="source")
        >>> report["metrics"]["accuracy"], {g: s["metrics"]["accuracy"] for g, s in report["groups"].items()}
    """
    if group_by and not data:
        raise UserError("--group_by needs --data: the JSONL file whose records are grouped")
    groups = group_records(data, group_by) if group_by else None
    sampling = sampling if sampling is not None and sampling.num_samples > 0 else None
    if sampling is not None:
        sampling.validate()
        prompts = (load_prompts(sampling.prompts, sampling.num_samples) if sampling.prompts else None)
    if misalignment is not None:
        misalignment.validate()
    config, model, checkpoint = load_run(model_dir)
    fine_tunes_policy = config.train.objective in POLICY_OBJECTIVES
    if groups is not None and config.train.objective in RL_OBJECTIVES:
        raise UserError(f"--group_by: a {config.train.objective} run has no per-example metrics on a file "
                        f"(it is evaluated by sampling completions of the file's prompts)")
    classifier = isinstance(model, Classifier)
    if fine_tunes_policy or isinstance(model, RewardModel):
        sampling = misalignment = None  # a reward model does not generate; a policy has its own report
    scorer = misalignment.scorer if misalignment is not None else None
    directory = report_dir(model_dir, data)
    if data:
        split, evaluated = ALL, evaluation_config(config, data)
        parts = _file_parts(evaluated, scorer)
    else:
        evaluated, loaded = config, load_eval_data(config, (split,), scorer)[split]
        if (loaded is None or loaded.num_examples == 0) and not fine_tunes_policy:
            hint = (f"; this run validates on --validation_data {config.data.validation_data}: evaluate any "
                    f"file with --data FILE" if config.data.validation_data else "")
            raise UserError(f"--split {split}: no {split} examples in {config.data.data}{hint}")
        parts = {split: loaded} if loaded is not None else {}
    functions = {}
    report = {"split": split, **({"data": str(data)} if data else {}), "checkpoint": os.path.basename(checkpoint),
              "step": checkpoint_step(checkpoint),
              **measure(config, evaluated, model, parts, batch_size, max_batches, functions)}
    metrics = report["metrics"]
    if groups is not None:
        report["group_by"] = group_by
        report["groups"] = _measure_groups(config, model, groups, scorer, batch_size, max_batches, functions)
    if fine_tunes_policy and (not data or policy is not None or config.train.objective in RL_OBJECTIVES):
        metrics.update(evaluate_policy(evaluated, model, policy or PolicyEvalSettings(), directory, split))
        report["policy_samples"] = POLICY_SAMPLES_FILE
    if sampling is not None and not classifier:
        tokenizer = tokenizer_for(config)  # prompts, references and samples in the model's tokens
        if prompts is None:
            prompts = [item for part in parts.values()
                       for item in split_prompts(part, sampling.num_samples, sampling.max_new_tokens, tokenizer)]
            prompts = prompts[:sampling.num_samples]
        metrics.update(sample_and_score(model, prompts, sampling, directory, tokenizer))
        report["samples"] = {"count": len(prompts), "file": SAMPLES_FILE,
                             **{k: v for k, v in vars(sampling).items() if k != "batch_size"}}
    if misalignment is not None and not classifier:
        metrics.update(evaluate_misalignment(model, misalignment, directory, config,
                                             run_threshold=evaluated.feedback.threshold))
        report["unconditional_samples"] = {"file": UNCONDITIONAL_SAMPLES_FILE, **vars(misalignment)}
    write_report(directory, report)
    return report


def _file_parts(evaluated, scorer, what=None):
    """{part: data} of the whole file of `evaluated` (an evaluation_config); a UserError if it holds
    nothing to evaluate."""
    parts = load_file_data(evaluated, scorer)
    if not parts and evaluated.train.objective not in RL_OBJECTIVES:
        raise UserError(f"--data {what or evaluated.data.data}: no examples to evaluate "
                        f"(for --objective {evaluated.train.objective})")
    return parts


def _measure_groups(config, model, groups, scorer, batch_size, max_batches, functions):
    """{group: report section} of each group's records, evaluated as a file of their own."""
    sections = {}
    with tempfile.TemporaryDirectory(prefix="tfpref-groups-") as directory:
        for index, (name, records) in enumerate(groups.items()):
            path = write_records(os.path.join(directory, f"group-{index}.jsonl"), records)
            try:
                evaluated = evaluation_config(config, path)
                parts = _file_parts(evaluated, scorer, what=f"group {name!r}")
                sections[name] = {"records": len(records),
                                  **measure(config, evaluated, model, parts, batch_size, max_batches, functions)}
            except UserError as e:  # name the group: the temporary file means nothing to a user
                raise UserError(f"--group_by group {name!r}: {e}") from None
    return sections


def measure(config, evaluated, model, parts, batch_size=32, max_batches=None, functions=None):
    """{"examples", "metrics", ...}: the objective's metrics of the run's `model` over `parts`
    ({name: data} loaded for the config `evaluated`: the run's `config`, or an evaluation_config).
    `functions` ({}, kept by the caller) holds the compiled batch functions for the next call.

    Metric sums are added over every batch of every part and divided once. Classifiers add the
    classification report and confusion matrix; reward models judged against ratings or clicks add
    the `accuracy` on the pairs those imply ("implied_pairs"). A loss other than the one the run
    was trained with (a reward model's, see tfpref.evaluation.files) is left out: it measures
    nothing the model learnt.
    """
    classifier = isinstance(model, Classifier)
    rated = isinstance(model, RewardModel) and evaluated.align.reward_loss in VALUE_LOSSES
    # Files differ only in their data: the groups of --group_by reuse one traced, compiled function.
    key = dataclasses.replace(evaluated, data=config.data).to_json()
    functions = {} if functions is None else functions
    if key not in functions:
        functions[key] = _batch_function(build_objective(evaluated), model, classifier, rated)
    objective, evaluate_batch = functions[key]

    totals, rows, examples, batches = {}, {}, 0, 0
    for name, data in parts.items():
        for batch in _batches(data, batch_size):
            if max_batches is not None and batches >= max_batches:
                break
            batches += 1
            examples += int(batch["token_ids"].shape[0])
            sums, batch_rows = evaluate_batch(batch)
            for metric, (numerator, denominator) in sums.items():
                previous = totals.get(metric, (0.0, 0.0))
                totals[metric] = (previous[0] + float(numerator), previous[1] + float(denominator))
            part_rows = rows.setdefault(name, {})
            for key, value in batch_rows.items():
                part_rows.setdefault(key, []).append(value.numpy())
            if "label" in batch:
                part_rows.setdefault("label", []).append(batch["label"].numpy())
    rows = {name: {key: np.concatenate(values) for key, values in part.items()} for name, part in rows.items()}
    metrics = objective.summarize({name: n / d for name, (n, d) in totals.items() if d > 0})
    if evaluated.align.reward_loss != config.align.reward_loss:
        metrics.pop("loss", None)
    section = {"examples": examples, "metrics": metrics}
    if classifier:
        labels = np.concatenate([part["label"] for part in rows.values()] or [np.zeros([0], np.int32)])
        predictions = np.concatenate([part["prediction"] for part in rows.values()] or [np.zeros([0], np.int32)])
        class_report, matrix = classification_report(labels, predictions, config.classes)
        metrics.update(class_report)
        section["classes"] = config.classes
        section["confusion_matrix"] = matrix.tolist()
    if rated and rows:
        items = rated_items(evaluated, list(rows))
        prompts, targets = zip(*[item for name, part in rows.items() for item in items[name][:len(part["reward"])]])
        rewards = np.concatenate([part["reward"] for part in rows.values()])
        correct, pairs = implied_pair_sums(prompts, targets, rewards, evaluated.align.min_rating_gap)
        if pairs:
            metrics["accuracy"] = correct / pairs
        section["implied_pairs"] = pairs
    return section


def _batch_function(objective, model, classifier, rated):
    """(objective, evaluate_batch): batch -> ({metric: (numerator, denominator)}, {row output: [batch]})."""

    @tf.function(jit_compile=True, reduce_retracing=True)
    def evaluate_batch(batch):
        output = objective.compute(batch, model, training=False)
        sums = {"loss": (tf.reduce_sum(output.losses), tf.cast(tf.size(output.losses), tf.float32))}
        sums.update(output.metrics)
        rows = {}
        if classifier:
            rows["prediction"] = tf.argmax(model(batch["token_ids"], batch["padding_mask"]), -1, output_type=tf.int32)
        if rated:
            rows["reward"] = objective.rewards(batch, model, False)[:, 0]
        return sums, rows

    return objective, evaluate_batch


def write_report(directory, report):
    """metrics.json in `directory` (a `report_dir`), and the same scalars in TensorBoard: the
    metrics as {split}/{metric}, each --group_by group's as {field}={group}/{metric}."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, METRICS_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default(step=report["step"]):
        sections = [(report["split"], report["metrics"])]
        sections += [(f"{report['group_by']}={name}", group["metrics"])
                     for name, group in report.get("groups", {}).items()]
        for prefix, metrics in sections:
            for name, value in metrics.items():
                if math.isfinite(value):
                    tf.summary.scalar(f"{prefix}/{name}", value)
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
    what = f"every record of {report['data']}" if "data" in report else f"{report['split']} split"
    count = (f"{report['examples']} examples" if report["examples"] or "prompts" not in report["metrics"]
             else f"{report['metrics']['prompts']:.0f} prompts")  # RL runs are only sampled
    lines = [f"{what}, {count}, {report['checkpoint']}", *rows]
    if report.get("implied_pairs"):
        lines.append(f"accuracy on the {report['implied_pairs']} pairs the ratings imply")
    if "groups" in report:
        lines += _groups_table(report)
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


def _groups_table(report):
    """Lines of a table: one row per --group_by group (all records first), one column per metric
    the groups have (not the overall sampling metrics)."""
    groups = {"(all records)": report, **report["groups"]}
    names = list(dict.fromkeys(name for group in report["groups"].values() for name in group["metrics"]))
    first = max(len(g) for g in groups) + 2
    widths = [max(len(name), 9) + 2 for name in names]
    lines = [f"by {report['group_by']}:",
             f"{'group':<{first}}{'examples':>10}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths))]
    for group, section in groups.items():
        values = [section["metrics"].get(name) for name in names]
        lines.append(f"{group:<{first}}{section['examples']:>10}" + "".join(
            f"{'-':>{w}}" if value is None else f"{value:>{w}.4f}" for value, w in zip(values, widths)))
    return lines
