"""The data layer: what a run derives from its data is read before validation, loading never
changes the config, and tfpref.data imports nothing above it."""
import ast
import glob
import json
import os

import numpy as np
import pytest

import tfpref  # noqa: F401  (quiet TensorFlow set-up)
from tfpref.config import DataConfig, RunConfig
from tfpref.data.splits import document_split as split_of
from tfpref.data.labeled import PEP8_CLASSES
from tfpref.data.loading import (labeled_classes, load_labeled_data, load_preference_data, preference_kind,
                                 preference_split_arrays)
from tfpref.data.preferences import load_preferences
from tfpref.data.tokenizer import left_pad
from tfpref.errors import UserError

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfpref", "data")
ALLOWED = ("tfpref.errors", "tfpref.config", "tfpref.scorers", "tfpref.data")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def labeled_records(count=200):
    # "rare" only on lines that hash outside the training split: not a class of the run.
    records = []
    for number in range(1, count + 1):
        label = "rare" if split_of(f"line:{number}") != "train" and number % 3 == 0 else ["a", "b", 7][number % 3]
        records.append({"text": f"x = {number}\n", "label": label})
    return records


def classify_config(data):
    config = RunConfig(model_dir="unused")
    config.train.objective = "classify"
    config.data.data, config.data.seq_len = data, 16
    return config


def test_labeled_classes_are_the_training_classes_the_loader_used_to_set(tmp_path):
    records = labeled_records()
    path = write_jsonl(tmp_path / "labeled.jsonl", records)
    # What load_labeled_data wrote into config.classes: the sorted labels (as strings) of the training split.
    expected = sorted({str(r["label"]) for n, r in enumerate(records, 1) if split_of(f"line:{n}") == "train"})
    assert expected == ["7", "a", "b"]
    assert labeled_classes(DataConfig(data=path)) == expected
    assert labeled_classes(DataConfig()) == list(PEP8_CLASSES)  # stdlib: both classes in its training split


def test_labeled_classes_refuse_what_the_loader_refuses(tmp_path):
    one_class = write_jsonl(tmp_path / "one.jsonl", [{"text": "x\n", "label": "a"}] * 20)
    with pytest.raises(UserError, match="the training split has 1 class"):
        labeled_classes(DataConfig(data=one_class))
    with pytest.raises(UserError, match="classification needs a .jsonl file"):
        labeled_classes(DataConfig(data=str(tmp_path / "corpus.py")))


def test_labeled_loading_uses_the_given_classes_and_leaves_the_config_alone(tmp_path):
    config = classify_config(write_jsonl(tmp_path / "labeled.jsonl", labeled_records()))
    before = config.to_dict()
    with pytest.raises(UserError) as error:  # classes not read first: refused, not filled in
        load_labeled_data(config, ("train",))
    assert config.to_dict() == before
    assert "\n" not in str(error.value) and config.data.data in str(error.value)

    config.classes = labeled_classes(config.data)
    before = config.to_dict()
    loaded = load_labeled_data(config, ("train", "validation", "test"))
    assert config.to_dict() == before
    assert set(loaded["train"].labels.tolist()) == {0, 1, 2}
    assert loaded["test"] is not None

    config.classes = ["a", "b", "c"]
    with pytest.raises(UserError, match=r"classes \['7', 'a', 'b'\] differ from the run's \['a', 'b', 'c'\]"):
        load_labeled_data(config, ("train",))


PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}
RANKING = {"prompt": "p", "completions": ["a", "b"], "ranking": [2, 1]}
RATING = {"prompt": "p", "completion": "a", "rating": 3}
CLICKS = {"prompt": "p", "completion": "a", "clicks": 1, "impressions": 4}


@pytest.mark.parametrize("record", [PAIR, RANKING, RATING, CLICKS])
def test_preference_kind_is_the_loaded_kind(tmp_path, record):
    records = [{**record, "prompt": f"p{i}"} for i in range(40)]
    path = write_jsonl(tmp_path / "data.jsonl", records)
    assert preference_kind(path) == load_preferences(path).kind


def test_preference_kind_needs_a_preference_file(tmp_path):
    with pytest.raises(UserError, match="--data stdlib: needs a preference JSONL file"):
        preference_kind("stdlib")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no preference records"):
        preference_kind(str(tmp_path / "empty.jsonl"))


def test_preference_loading_leaves_the_config_alone(tmp_path):
    records = [{"prompt": f"p{i}", "completions": ["a", "bb", "c"], "ranking": [2, 1, 3]} for i in range(60)]
    config = classify_config(write_jsonl(tmp_path / "ranked.jsonl", records))
    config.train.objective = "reward_model"
    before = config.to_dict()
    data = load_preference_data(config)
    for pairs_only in (False, True):
        loaded = preference_split_arrays(config, data, ("train", "validation", "test"), pairs_only)
        assert loaded["train"].num_examples > 0
    assert config.to_dict() == before


def test_left_pad_lives_in_the_data_layer():
    ids, mask = left_pad([np.array([5, 6]), np.array([7])], width=3)
    assert ids.tolist() == [[0, 5, 6], [0, 0, 7]] and mask.tolist() == [[False, True, True], [False, False, True]]


def test_the_data_layer_imports_nothing_above_it_and_imports_at_the_top():
    for path in sorted(glob.glob(os.path.join(DATA_DIR, "*.py"))):
        tree = ast.parse(open(path, encoding="utf-8").read())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                where = f"{os.path.basename(path)}:{node.lineno} imports {name}"
                if name.split(".")[0] == "tfpref":
                    assert name.startswith(ALLOWED), where
                    assert id(node) in top_level, where + " inside a function"
