"""The `tfpref` command: subcommands, grouped --help, refused flags, --verbose, one-line failures."""
import os
import subprocess
import sys

import pytest

from tfpref.cli import main
from tfpref.cli.common import run_cli
from tfpref.cli.flags import GROUPS
from tfpref.cli.train import build_train_parser, config_from_args
from tfpref.config import FLAG_MODELS, FLAG_OBJECTIVES, RunConfig
from tfpref.errors import UserError

from helpers import REPO, run_cli_in_process


def test_train_help_is_grouped_by_what_the_flags_are_for(capsys):
    with pytest.raises(SystemExit):
        build_train_parser(prog="tfpref train").parse_args(["--help"])
    text = capsys.readouterr().out
    for title in GROUPS.values():
        assert f"\n{title}:\n" in text, title
    # Each group lists its own flags: --ppo_epochs under RL, --num_heads under model.
    rl = text[text.index("preference learning and RL:"):text.index("runtime:")]
    assert "--ppo_epochs" in rl and "--num_heads" not in rl and "[--objective ppo]" in rl


@pytest.mark.parametrize("flags, refused", [
    (["--model", "lstm", "--num_heads", "2"], "--num_heads does not apply: it applies to --model transformer only"),
    (["--model", "conv", "--objective", "reward_model", "--ff_dim", "8"], "--ff_dim does not apply"),
    (["--objective", "dpo", "--init_from", "x", "--ppo_epochs", "3"], "--ppo_epochs does not apply: it applies to "
                                                                     "--objective ppo only, not dpo"),
    (["--objective", "mle", "--scorer", "pep8"], "--scorer does not apply"),
    (["--objective", "rloo", "--init_from", "x", "--d_model", "64"], "--d_model does not apply: the architecture "
                                                                     "comes from --init_from x"),
])
def test_a_flag_that_does_nothing_is_refused_with_one_line(tmp_path, flags, refused):
    args = build_train_parser().parse_args([*flags, "--model_dir", str(tmp_path / "run")])
    with pytest.raises(UserError, match=refused):
        config_from_args(args)


def test_flags_that_apply_are_accepted(tmp_path):
    args = build_train_parser().parse_args(["--objective", "ppo", "--init_from", "x", "--ppo_epochs", "3",
                                            "--dropout", "0.1", "--model_dir", str(tmp_path / "run")])
    config = config_from_args(args)
    assert config.align.ppo_epochs == 3 and config.model.dropout == 0.1


def test_every_scoped_flag_is_a_flag():
    names = {f for section in ("data", "model", "train", "feedback", "align", "runtime")
             for f in vars(getattr(RunConfig(), section))}
    assert set(FLAG_OBJECTIVES) <= names and set(FLAG_MODELS) <= names


def test_the_tfpref_command_dispatches_and_refuses_unknown_commands(tmp_path):
    assert main(["nonsense"]) == 2
    done = run_cli_in_process(main, ["evaluate", "--model_dir", str(tmp_path / "missing")])
    assert done.returncode == 2 and done.stderr.strip().endswith("not a run directory (no config.json)")


def test_an_internal_failure_is_one_line_and_the_traceback_is_kept(capsys):
    def broken(argv):
        raise ZeroDivisionError("division by zero")

    assert run_cli(broken, []) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: internal error, ZeroDivisionError: division by zero")
    path = lines[0].rsplit("traceback in ", 1)[1].rstrip(")")
    with open(path, encoding="utf-8") as f:
        assert "ZeroDivisionError" in f.read()
    os.remove(path)


def test_verbose_works_through_the_tfpref_command_too(tmp_path):
    def stderr(*flags):
        done = subprocess.run([sys.executable, "-m", "tfpref", "evaluate", "--model_dir", str(tmp_path), *flags],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 2
        return done.stderr.strip().splitlines()

    quiet, verbose = stderr(), stderr("--verbose")
    assert len(quiet) == 1 and quiet[0].startswith("error: --model_dir")
    assert len(verbose) > 1 and verbose[-1] == quiet[0]  # TensorFlow's own start-up lines come first
