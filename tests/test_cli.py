"""train.py's flags: --help documents them, they map onto RunConfig, a run dir's config.json fills in
the ones left out, and validation names the flag to fix."""
import dataclasses
import json
import os

import pytest

from tfpref.cli import train_main
from tfpref.cli.flags import TRAIN_FLAGS
from tfpref.cli.train import build_train_parser, config_from_args
from tfpref.config import RunConfig, config_path, incompatible_fields
from tfpref.errors import UserError

from helpers import run_cli_in_process

DOCUMENTED_FLAGS = (
    "--model_dir --model --objective --data --text_field --train_steps --batch_size --seq_len "
    "--d_model --num_layers --num_heads --ff_dim --dropout --learning_rate --warmup_steps --seed "
    "--strategy --cpu_replicas --jit_compile --mixed_precision --checkpoint_every --eval_every "
    "--log_every").split()


def test_help_exits_0_and_documents_every_flag():
    # In this process: a new interpreter costs ~8 s; the tests of the real command start one.
    result = run_cli_in_process(train_main, ["--help"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Each flag must start an option entry of its own (not just appear inside another flag's name).
    entries = {line.split()[0].rstrip(",") for line in result.stdout.splitlines()
               if line.strip().startswith("--")}
    missing = [flag for flag in DOCUMENTED_FLAGS if flag not in entries]
    assert not missing, f"--help does not document {missing}:\n{result.stdout}"
    assert "--no-jit_compile" in result.stdout  # the boolean flag can be turned off


def test_every_flag_has_help_text_and_every_config_field_has_a_flag():
    parser = build_train_parser()
    actions = {a.dest: a for a in parser._actions}
    for flag in DOCUMENTED_FLAGS:
        help_text = actions[flag[2:]].help
        assert help_text and len(help_text) > 15, f"{flag} has no real help text"
    flagged = {(section, name) for section, name, _ in TRAIN_FLAGS}
    config = RunConfig()
    for section in ("data", "model", "train", "runtime"):
        for field in dataclasses.fields(getattr(config, section)):
            assert (section, field.name) in flagged, f"{section}.{field.name} has no flag"


def _custom_config(model_dir):
    config = RunConfig(model_dir=str(model_dir))
    config.data.data, config.data.text_field, config.data.seq_len = "corpus.jsonl", "content", 64
    config.model.model, config.model.d_model, config.model.dropout = "lstm", 48, 0.25
    config.model.tie_embeddings = False
    config.train.train_steps, config.train.learning_rate, config.train.seed = 77, 5e-4, 3
    config.train.mixed_precision = "bf16"
    config.runtime.strategy, config.runtime.cpu_replicas, config.runtime.jit_compile = "mirrored", 2, False
    return config


def test_config_json_round_trip(tmp_path):
    config = _custom_config(tmp_path / "run")
    assert config != RunConfig()
    again = RunConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    assert type(again.model.dropout) is float and type(again.model.tie_embeddings) is bool
    path = tmp_path / "config.json"
    path.write_text(config.to_json(), encoding="utf-8")
    assert RunConfig.load(str(path)) == config


def test_load_of_a_corrupt_config_is_a_user_error_naming_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model": {"d_model": 12', encoding="utf-8")
    with pytest.raises(UserError, match="config.json"):
        RunConfig.load(str(path))


def test_flags_fill_in_over_defaults_without_a_run_dir(tmp_path):
    args = build_train_parser().parse_args(["--model_dir", str(tmp_path / "new"), "--seq_len", "32",
                                            "--dropout", "0.1", "--no-jit_compile"])
    config = config_from_args(args)
    expected = RunConfig(model_dir=str(tmp_path / "new"))
    expected.data.seq_len, expected.model.dropout, expected.runtime.jit_compile = 32, 0.1, False
    assert config == expected


def test_default_model_dir_is_named_after_model_and_objective(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so no real logs/ directory is consulted
    config = config_from_args(build_train_parser().parse_args(["--model", "lstm"]))
    assert config.model_dir == os.path.join("logs", "lstm-conditional")  # the default job's objective
    assert config.model.model == "lstm"
    config = config_from_args(build_train_parser().parse_args(["--objective", "awr"]))
    assert config.model_dir == os.path.join("logs", "transformer-awr")


def test_config_from_args_takes_unspecified_values_from_the_run_dirs_config(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    stored = _custom_config(model_dir)
    with open(config_path(str(model_dir)), "w", encoding="utf-8") as f:
        f.write(stored.to_json())

    same = config_from_args(build_train_parser().parse_args(["--model_dir", str(model_dir)]))
    assert same == stored

    args = build_train_parser().parse_args(["--model_dir", str(model_dir), "--train_steps", "200",
                                            "--jit_compile"])
    resumed = config_from_args(args)
    assert resumed.train.train_steps == 200 and resumed.runtime.jit_compile is True
    assert resumed.model.d_model == 48 and resumed.model.model == "lstm"  # from config.json, not defaults
    assert resumed.data.data == "corpus.jsonl" and resumed.data.text_field == "content"
    assert resumed.train.learning_rate == 5e-4 and resumed.runtime.strategy == "mirrored"
    assert incompatible_fields(stored, resumed) == []  # more steps and XLA on: still the same run

    changed = config_from_args(build_train_parser().parse_args(["--model_dir", str(model_dir),
                                                                "--d_model", "64"]))
    assert incompatible_fields(stored, changed) == ["model.d_model"]


def _valid_config():
    return RunConfig(model_dir="logs/test-run")


def test_default_config_is_valid():
    config = _valid_config()
    assert config.validate() is config  # no error; it returns the config itself, for chaining
    assert config == _valid_config()  # and checking changed nothing
    config.model.model, config.data.seq_len = "lstm", 4096  # the length limit is the transformer's
    assert config.validate() is config
    config.model.model = "transformer"
    with pytest.raises(UserError, match="--seq_len 4096"):
        config.validate()


@pytest.mark.parametrize("section, name, value, flag", [
    ("data", "seq_len", 0, "--seq_len"),
    ("data", "seq_len", 4096, "--seq_len"),
    ("data", "data", "", "--data"),
    ("data", "text_field", "", "--text_field"),
    ("model", "model", "gpt", "--model"),
    ("model", "d_model", -8, "--d_model"),
    ("model", "num_heads", 3, "--num_heads"),  # 128 is not divisible by 3
    ("model", "dropout", 1.0, "--dropout"),
    ("train", "objective", "ppo", "--objective"),
    ("train", "train_steps", 0, "--train_steps"),
    ("train", "batch_size", -2, "--batch_size"),
    ("train", "learning_rate", 0.0, "--learning_rate"),
    ("train", "warmup_steps", -1, "--warmup_steps"),
    ("train", "mixed_precision", "fp8", "--mixed_precision"),
    ("runtime", "strategy", "tpu", "--strategy"),
    ("runtime", "cpu_replicas", -1, "--cpu_replicas"),
    ("runtime", "log_every", 0, "--log_every"),
    (None, "model_dir", "", "--model_dir"),
])
def test_validate_raises_user_error_naming_the_flag(section, name, value, flag):
    config = _valid_config()
    setattr(getattr(config, section) if section else config, name, value)
    with pytest.raises(UserError) as raised:
        config.validate()
    message = str(raised.value)
    assert flag in message and "\n" not in message, message


def test_a_hand_edited_config_with_wrong_types_is_a_clear_error(tmp_path):
    path = tmp_path / "config.json"
    for broken in ({"model": {"d_model": "wide"}}, [1, 2], {"train": {"batch_size": True}}):
        path.write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(UserError, match="config.json: cannot read run config"):
            RunConfig.load(str(path))
