"""`tfpref train` (train.py): flags -> the run's config -> `tfpref.training.run.train`.

Flags default to "not given": on an existing run directory the stored config.json supplies every
flag you leave out, so `tfpref train --model_dir=DIR` resumes DIR exactly as it was started. A flag
that does nothing for the chosen objective or model is refused, never ignored.
"""
import argparse
import dataclasses
import os
import sys

from tfpref.cli.common import OneLineErrorParser, add_output_flags, run_cli
from tfpref.cli.flags import GROUPS, TRAIN_FLAGS
from tfpref.config import FLAG_MODELS, FLAG_OBJECTIVES, RunConfig, inapplicable_flags
from tfpref.errors import UserError
from tfpref.runs import config_path
from tfpref.training.run import train
from tfpref.training.trainer import TrainingDiverged

_NOT_FLAGS = ("verbose", "debug", "no_progress")


def _section_fields(section):
    return {f.name: f for f in dataclasses.fields(type(getattr(RunConfig(), section)))}


def _scope(name):
    """' [objective: ...]' / ' [model: ...]' for flags that apply to some objectives or models only."""
    if name in FLAG_OBJECTIVES:
        return f" [--objective {', '.join(FLAG_OBJECTIVES[name])}]"
    if name in FLAG_MODELS:
        return f" [--model {', '.join(FLAG_MODELS[name])}]"
    return ""


def build_train_parser(prog=None):
    parser = OneLineErrorParser(
        prog=prog or ("train.py" if sys.argv[0].endswith("train.py") else "tfpref train"),
        description="Train a tfpref model. With no flags: conditional training (pretraining with PEP 8 "
                    "feedback: <|aligned|>/<|misaligned|> control tokens before each line) of a small "
                    "transformer on the Python standard library, in logs/transformer-conditional. A flag in "
                    "[brackets] applies to those objectives or models only and is refused elsewhere.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = RunConfig()
    groups = {section: parser.add_argument_group(title) for section, title in GROUPS.items()}
    groups["runtime"].add_argument("--model_dir", default=argparse.SUPPRESS,
                                   help="Run directory (config, checkpoints, TensorBoard logs). Re-using it "
                                        "resumes the run. (default: logs/<model>-<objective>)")
    for section, name, help_text in TRAIN_FLAGS:
        field = _section_fields(section)[name]
        default = getattr(getattr(defaults, section), name)
        kwargs = dict(default=argparse.SUPPRESS, help=f"{help_text}{_scope(name)} (default: {default})")
        if field.type in (bool, "bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}.get(field.type, field.type)
        groups[section].add_argument(f"--{name}", **kwargs)
    output = add_output_flags(parser)
    output.add_argument("--no_progress", action="store_true", help="No progress bar (for logs).")
    return parser


def config_from_args(args):
    """RunConfig from parsed flags, on top of the run dir's stored config when it exists. Refuses a
    flag that does not apply to the run's objective or model."""
    given = {k: v for k, v in vars(args).items() if k not in _NOT_FLAGS}
    default_dir = os.path.join("logs", f"{given.get('model', 'transformer')}-"
                                       f"{given.get('objective', RunConfig().train.objective)}")
    model_dir = given.pop("model_dir", default_dir)
    stored = config_path(model_dir)
    config = RunConfig.load(stored) if os.path.exists(stored) else RunConfig()
    config.model_dir = model_dir
    for section, name, _ in TRAIN_FLAGS:
        if name in given:
            setattr(getattr(config, section), name, given[name])
    if "threshold" in given and "threshold_percentile" in given:
        raise UserError("--threshold and --threshold_percentile: give one (the percentile decides the threshold)")
    refused = inapplicable_flags(config, given)
    if refused:
        raise UserError("; ".join(f"--{name} does not apply: {reason}" for name, reason in refused))
    return config


def _train(argv):
    args = build_train_parser().parse_args(argv)
    config = config_from_args(args)
    try:
        result = train(config, show_progress=not args.no_progress)
    except TrainingDiverged as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    print()
    if "interrupted_by" in result:
        print(f"Stopped by {result['interrupted_by']} at step {result['step']}; checkpoint saved. "
              f"Run the same command to resume.")
        return 0
    summary = [f"step {result['step']}"]
    for key, value in result.items():
        if key == "loss" or key.startswith("validation_"):
            summary.append(f"{key} {value:.4f}")
    print("Done: " + ", ".join(summary))
    print(f"Run directory: {config.model_dir}")
    if "export" in result:
        print(f"SavedModel: {result['export']}")
    if "controllability" in result:
        check = result["controllability"]
        print(f"Samples asked to be aligned:    misalignment {check['aligned_misalignment']:.4f}, "
              f"{check['aligned_violation_rate']:.0%} with a violation")
        print(f"Samples asked to be misaligned: misalignment {check['misaligned_misalignment']:.4f}, "
              f"{check['misaligned_violation_rate']:.0%} with a violation")
    print(f"Watch it:      tensorboard --logdir {os.path.dirname(os.path.abspath(config.model_dir))}")
    return 0


def main(argv=None):
    return run_cli(_train, sys.argv[1:] if argv is None else argv)
