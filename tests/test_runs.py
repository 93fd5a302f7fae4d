"""The run directory: the resolved config (decided before validation, never changed after) and load_run."""
import json

import pytest

from tfpref.config import RunConfig
from tfpref.errors import UserError
from tfpref.models import CausalLM, Classifier
from tfpref.runs import load_run, resolve_config
from tfpref.training.run import train

from helpers import tiny_config, write_tiny_corpus


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("runs")
    corpus = write_tiny_corpus(str(directory))
    config = tiny_config(directory / "lstm", corpus, model="lstm", train_steps=2)
    train(config, show_progress=False)
    return corpus, str(directory / "lstm")


def test_the_config_is_validated_after_init_from_decides_the_model(lstm_run, tmp_path):
    corpus, source = lstm_run
    # The flags' model is a transformer, which cannot take 4096 positions; the trained model is
    # the source's LSTM, which can: only the model that is trained is checked.
    config = tiny_config(tmp_path / "ft", corpus, init_from=source, seq_len=4096)
    assert config.model.model == "transformer"
    resolved = resolve_config(config)
    assert resolved.model.model == "lstm" and config.model.model == "transformer"  # the caller's is a copy
    config.model.model, config.train.init_from = "transformer", ""
    with pytest.raises(UserError, match="--seq_len 4096 is above the transformer's maximum"):
        resolve_config(config)


def test_training_leaves_the_callers_config_alone_and_stores_the_resolved_one(lstm_run, tmp_path):
    _, source = lstm_run
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text("".join(json.dumps({"text": f"x = {i}\n", "label": "ab"[i % 2]}) + "\n" for i in range(40)),
                       encoding="utf-8")
    config = tiny_config(tmp_path / "cls", str(labeled), objective="classify", init_from=source, train_steps=2)
    before = config.to_dict()
    train(config, show_progress=False)
    assert config.to_dict() == before and config.classes == []
    stored = RunConfig.load(str(tmp_path / "cls" / "config.json"))
    assert stored.classes == ["a", "b"] and stored.model.model == "lstm"
    loaded, model, checkpoint = load_run(str(tmp_path / "cls"))
    assert isinstance(model, Classifier) and model.classes == ["a", "b"] and checkpoint.endswith("ckpt-2")
    assert loaded.to_dict() == {**stored.to_dict(), "model_dir": str(tmp_path / "cls")}


def test_load_run_gives_the_task_model_and_names_a_missing_run(lstm_run, tmp_path):
    _, source = lstm_run
    _, model, _ = load_run(source)
    assert isinstance(model, CausalLM) and model.backbone.name == "lstm"
    with pytest.raises(UserError, match="--reward_model .*: not a run directory"):
        load_run(str(tmp_path / "missing"), flag="--reward_model")


def test_a_config_written_before_split_by_existed_reads_as_split_by_prompt(tmp_path):
    old = RunConfig().to_dict()
    del old["data"]["split_by"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    assert RunConfig.load(str(path)).data.split_by == "prompt"  # what such runs did
    assert RunConfig.from_dict(RunConfig().to_dict()).data.split_by == "auto"
