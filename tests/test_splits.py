"""Held-out splits of every kind of data: preference records and JSONL prompts by prompt hash."""
import hashlib
import json

import pytest

import tfpref  # noqa: F401  (quiet TensorFlow set-up)
from tfpref.config import RunConfig
from tfpref.data.loading import preference_split_arrays
from tfpref.data.preferences import load_preferences
from tfpref.data.splits import prompt_split
from tfpref.data.prompts import policy_prompts
from tfpref.data.tokenizer import ByteTokenizer

SPLITS = ("train", "validation", "test")


def write_pairs(path, count=400):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"prompt": f"def function_{i}(value):\n", "chosen": "    return 1\n",
                                "rejected": "  return 1\n"}) + "\n")
    return str(path)


def old_validation(prompt):
    """The validation rule before the test split existed: the held-out splits come from it, so the
    training split has not moved."""
    return int.from_bytes(hashlib.sha1(prompt.encode("utf-8")).digest()[:4], "big") % 100 < 10


def test_preference_splits_are_disjoint_non_empty_and_keep_validation(tmp_path):
    data = load_preferences(write_pairs(tmp_path / "pairs.jsonl"))
    prompts = {name: {p.prompt for p in data.split(name).items} for name in SPLITS}
    assert all(prompts.values())
    assert not prompts["test"] & (prompts["train"] | prompts["validation"])
    assert not prompts["train"] & prompts["validation"]
    assert set.union(*prompts.values()) == {p.prompt for p in data.items}
    assert prompts["validation"] | prompts["test"] == {p.prompt for p in data.items if old_validation(p.prompt)}
    assert 0.02 < len(prompts["test"]) / len(data.items) < 0.09  # about as large as validation
    with pytest.raises(ValueError, match="unknown split"):
        data.split("held_out")


def test_preference_arrays_of_the_test_split_hold_test_prompts_only(tmp_path):
    data = load_preferences(write_pairs(tmp_path / "pairs.jsonl"))
    config = RunConfig()
    config.data.seq_len = 48
    loaded = preference_split_arrays(config, data, SPLITS, pairs_only=True)
    tokenizer = ByteTokenizer()
    for name in SPLITS:
        texts = [tokenizer.decode(row[0]) for row in loaded[name].arrays["token_ids"]]
        expected = sorted(p.prompt + p.completions[0] for p in data.split(name).items)
        assert sorted(texts) == expected, name


def test_jsonl_prompts_of_a_split_are_its_preference_prompts(tmp_path):
    path = write_pairs(tmp_path / "pairs.jsonl")
    data = load_preferences(path)
    by_split = {name: policy_prompts(path, name, max_chars=1000) for name in SPLITS}
    assert not set(by_split["validation"]) & set(by_split["train"])
    assert not set(by_split["test"]) & (set(by_split["train"]) | set(by_split["validation"]))
    for name in SPLITS:  # a DPO run is evaluated on exactly its held-out prompts
        assert by_split[name] == list(dict.fromkeys(p.prompt for p in data.split(name).items)), name
    # Cut prompts are split by the whole prompt, as their records are.
    short = policy_prompts(path, "validation", max_chars=12)
    assert short == list(dict.fromkeys(p[-12:] for p in by_split["validation"]))


def test_prompt_split_is_stable_and_mostly_train():
    prompts = [f"prompt {i}" for i in range(4000)]
    splits = [prompt_split(p) for p in prompts]
    assert splits == [prompt_split(p) for p in prompts]
    assert 0.87 < splits.count("train") / len(prompts) < 0.93
