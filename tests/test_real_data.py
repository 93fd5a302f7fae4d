"""Real preference data: empty or shared prompts, extra fields, a split field, a separate validation
file, ratings of many raters, and tens of thousands of ratings under one prompt."""
import json
import time
import tracemalloc

import numpy as np
import pytest

from tfpref.config import RunConfig
from tfpref.data.loading import load_preference_data, preference_split_arrays
from tfpref.data.preferences import load_preferences, sampled_partners
from tfpref.data.prompts import policy_prompts
from tfpref.data.splits import choose_split_by
from tfpref.data.synthetic import word_preference_pairs
from tfpref.errors import UserError
from tfpref.runs import resolve_config
from tfpref.training.run import train

from helpers import tiny_config

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_one_shared_prompt_is_split_by_record_and_the_choice_is_recorded(tmp_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", word_preference_pairs(400, seed=0))
    data = load_preferences(path)
    assert data.split_by == "record"
    sizes = {name: len(data.split(name).items) for name in ("train", "validation", "test")}
    assert sizes["train"] > 320 and sizes["validation"] > 5 and sizes["test"] > 5, sizes
    config = tiny_config(tmp_path / "rm", path, objective="reward_model", model="conv")
    resolved = resolve_config(config)
    assert resolved.data.split_by == "record" and config.data.split_by == "auto"
    assert "Held-out records of" in capsys.readouterr().out
    # The same rule with a constant sentence instead of the empty prompt: no luck of the hash.
    constant = write_jsonl(tmp_path / "constant.jsonl", word_preference_pairs(400, seed=0, prompt="Which is better?"))
    assert load_preferences(constant).split_by == "record"


def test_varied_prompts_are_split_by_prompt():
    prompts = [f"prompt {i}" for i in range(200)] * 3  # three completions' records per prompt
    assert choose_split_by(prompts)[0] == "prompt"
    assert choose_split_by([""] * 50 + prompts)[0] == "record"  # the empty prompt holds 8%


def test_a_split_field_is_respected_and_checked(tmp_path):
    records = word_preference_pairs(60, seed=1)
    for i, record in enumerate(records):
        record["split"] = ["train", "validation", "test"][i % 3]
    data = load_preferences(write_jsonl(tmp_path / "pairs.jsonl", records))
    assert [len(data.split(name).items) for name in ("train", "validation", "test")] == [20, 20, 20]
    records[4]["split"] = "dev"
    with pytest.raises(UserError, match=r"pairs.jsonl:5: field 'split' must be one of train, validation, test"):
        load_preferences(write_jsonl(tmp_path / "pairs.jsonl", records))


def test_a_separate_validation_file_validates_and_all_of_data_trains(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", word_preference_pairs(100, seed=2))
    test_path = write_jsonl(tmp_path / "test.jsonl", word_preference_pairs(30, seed=3))
    config = tiny_config(tmp_path / "rm", train_path, objective="reward_model", validation_data=test_path,
                         reward_loss="bradley_terry")
    data = load_preference_data(config)
    assert len(data.split("train").items) == 100 and len(data.split("validation").items) == 30
    loaded = preference_split_arrays(config, data, ("train", "validation", "test"), pairs_only=True)
    assert loaded["train"].num_examples == 100 and loaded["validation"].num_examples == 30
    assert loaded["test"] is None
    ratings = write_jsonl(tmp_path / "ratings.jsonl", [{"prompt": "", "completion": "x", "rating": 1}])
    config.data.validation_data = ratings
    with pytest.raises(UserError, match="--validation_data .*ratings.jsonl: rating records, but --data"):
        load_preference_data(config)


def test_prompts_of_a_run_with_a_validation_file(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"p{i}"} for i in range(50)])
    held_out = write_jsonl(tmp_path / "held.jsonl", [{"prompt": f"q{i}"} for i in range(5)])
    assert policy_prompts(train_path, "train", 100, validation_data=held_out) == [f"p{i}" for i in range(50)]
    assert policy_prompts(train_path, "validation", 100, validation_data=held_out) == [f"q{i}" for i in range(5)]
    unconditioned = write_jsonl(tmp_path / "empty.jsonl", [{"prompt": ""}] * 20)
    assert policy_prompts(unconditioned, "all", 100) == [""]  # generation from BOS alone


def test_ratings_of_many_raters_and_bounded_pairs(tmp_path):
    records = [{"prompt": "", "completion": f"text {i}", "rating": [i % 5, (i + 1) % 5, 3], "rater_ids": [1, 2, 3]}
               for i in range(200)]
    data = load_preferences(write_jsonl(tmp_path / "ratings.jsonl", records))
    assert data.split_by == "record" and data.items[0].weight == 3.0
    pairs = data.comparisons(pairs_per_item=3, min_gap=0.5)
    targets = {p.completions[0]: p.target for p in data.items}
    assert 0 < len(pairs) <= 200 * 3 and len(set(pairs)) == len(pairs)
    assert all(targets[chosen] - targets[rejected] > 0.5 for _, chosen, rejected, _, _ in pairs)
    assert pairs == data.comparisons(pairs_per_item=3, min_gap=0.5)  # seeded


def test_25000_ratings_under_one_prompt_pair_in_bounded_time_and_memory():
    rng = np.random.default_rng(0)
    targets = rng.normal(size=25000).round(1)
    tracemalloc.start()
    began = time.perf_counter()
    pairs = sampled_partners(targets, 4, 0.0, np.random.default_rng(1))
    seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"ratings": 25000, "pairs": len(pairs), "seconds": round(seconds, 2),
                      "peak_mib": round(peak / 2**20, 1)}))
    assert 90000 < len(pairs) <= 100000  # 4 partners per item, a few drawn twice: not 312 million
    assert peak < 64 * 2**20
    a, b = np.array(pairs).T
    assert np.all(targets[a] != targets[b])


def test_the_error_for_no_training_records_says_what_to_do(tmp_path):
    records = [{"prompt": "", "completion": f"t{i}", "rating": 1.0} for i in range(30)]
    config = tiny_config(tmp_path / "rm", write_jsonl(tmp_path / "flat.jsonl", records), objective="reward_model",
                         reward_loss="bradley_terry")
    with pytest.raises(UserError, match="no two training records of one prompt have different ratings"):
        preference_split_arrays(config, load_preference_data(config), ("train",), pairs_only=True)


@pytest.mark.slow
def test_a_reward_model_learns_unconditioned_pairs_and_holds_on_a_separate_file(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", word_preference_pairs(600, seed=4))
    test_path = write_jsonl(tmp_path / "test.jsonl", word_preference_pairs(200, seed=5, noise=0.0))
    config = tiny_config(tmp_path / "rm", train_path, objective="reward_model", validation_data=test_path,
                         model="conv", num_layers=3, reward_pooling="mean", train_steps=150, batch_size=32,
                         learning_rate=3e-3, eval_batches=7)
    result = train(config, show_progress=False)
    stored = RunConfig.load(str(tmp_path / "rm" / "config.json"))
    assert stored.data.validation_data == test_path and stored.data.split_by == "record"
    assert result["validation_accuracy"] >= 0.85, result


@pytest.mark.slow
def test_sft_then_dpo_on_held_out_unconditioned_pairs(tmp_path):
    """The usual pipeline on data shaped like real judgements: pretrain, SFT, then DPO from the SFT
    run, validated on a separate file: the implicit reward learns to order held-out pairs."""
    pairs = word_preference_pairs(400, seed=6, noise=0.1)
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": r["chosen"] + "\n"} for r in pairs])
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "", "completion": r["chosen"]} for r in pairs])
    train_path = write_jsonl(tmp_path / "train.jsonl", pairs)
    test_path = write_jsonl(tmp_path / "test.jsonl", word_preference_pairs(100, seed=7, noise=0.0))
    train(tiny_config(tmp_path / "base", texts, train_steps=20), show_progress=False)
    sft_result = train(tiny_config(tmp_path / "sft", sft, objective="sft", init_from=str(tmp_path / "base"),
                                   train_steps=20, batch_size=16), show_progress=False)
    assert sft_result["validation_nll"] < 3.0, sft_result  # a uniform guess over bytes is 5.6
    dpo = tiny_config(tmp_path / "dpo", train_path, objective="dpo", init_from=str(tmp_path / "sft"),
                      validation_data=test_path, train_steps=60, batch_size=16, learning_rate=3e-3, eval_batches=7)
    result = train(dpo, show_progress=False)
    assert result["validation_reward_accuracy"] >= 0.8 and result["validation_reward_margin"] > 0, result


def test_a_policy_of_conversational_pairs_is_sampled_and_judged_with_the_chat_template(tmp_path):
    """DPO on TRL's conversational records, then policy evaluation: its held-out prompts are
    conversations, rendered by the chat template, and the replies end their turn."""
    from tfpref.evaluation.policy import PolicyEvalSettings
    from tfpref.evaluation.run import evaluate_run

    def message(role, content):
        return {"role": role, "content": content}

    records = [{"prompt": [message("user", f"say something {i}")], "chosen": [message("assistant", "good fine")],
                "rejected": [message("assistant", "stone metal")]} for i in range(80)]
    pairs = write_jsonl(tmp_path / "chat_pairs.jsonl", records)
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": "good fine nice\n"}] * 50)
    train(tiny_config(tmp_path / "base", texts, train_steps=2), show_progress=False)
    config = tiny_config(tmp_path / "dpo", pairs, objective="dpo", init_from=str(tmp_path / "base"), train_steps=2,
                         max_new_tokens=8)
    train(config, show_progress=False)
    report = evaluate_run(str(tmp_path / "dpo"), split="validation", policy=PolicyEvalSettings(
        num_prompts=4, scorer="user_scorer:count_x", batch_size=4))
    assert report["metrics"]["prompts"] == 4
    with open(tmp_path / "dpo" / "eval" / "policy_samples.jsonl", encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    assert all(s["prompt"][0][0] == "user" and isinstance(s["completion"], str) for s in samples)
