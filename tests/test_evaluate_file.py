"""evaluate.py --data FILE [--group_by FIELD]: any run on a whole file of its kind, by group."""
import json
import math

import numpy as np
import pytest

from tfpref.cli import evaluate_main
from tfpref.errors import UserError
from tfpref.evaluation.files import MISSING, file_reward_loss, group_records, implied_pair_sums
from tfpref.evaluation.run import evaluate_run, report_dir
from tfpref.training.run import train

from helpers import run_cli_in_process, scalar_events, tiny_config, write_tiny_corpus
from test_classify import write_labeled


def noisy(text, rng):
    """`text` with a few of its spaces turned into x: what the reward models here learn to dislike."""
    return text.replace(" ", "x", int(rng.integers(3, 6)))


def write_pairs(path, count, seed, source=None, reversed_labels=False, first=0):
    """Pairs of a plain completion and a noisy one (`reversed_labels`: the noisy one is chosen)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(first, first + count):
        plain = f"    return value + {rng.integers(100)}\n"
        chosen, rejected = plain, noisy(plain, rng)
        if reversed_labels:
            chosen, rejected = rejected, chosen
        record = {"prompt": f"def function_{i}(value):\n", "chosen": chosen, "rejected": rejected}
        if source is not None:
            record["source"] = source
        records.append(record)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return records


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: run dir} of a tiny language model and a reward model initialised from it, trained
    on pairs (the evaluated files below are others)."""
    root = tmp_path_factory.mktemp("runs")
    corpus = write_tiny_corpus(str(root))
    train(tiny_config(root / "lm", corpus, train_steps=20), show_progress=False)
    pairs = root / "train_pairs.jsonl"
    write_pairs(pairs, 96, seed=0)
    train(tiny_config(root / "rm", pairs, objective="reward_model", init_from=str(root / "lm"), train_steps=30,
                      learning_rate=1e-2), show_progress=False)
    return {"root": root, "lm": str(root / "lm"), "rm": str(root / "rm")}


@pytest.fixture(scope="module")
def grouped_pairs(runs):
    """A held-out pairs file of three groups: 'web' (pairs like the training ones), 'forum' (their
    labels reversed) and records without a source."""
    path = runs["root"] / "human_pairs.jsonl"
    records = (write_pairs(path, 20, seed=1, source="web", first=1000)
               + write_pairs(path, 12, seed=2, source="forum", reversed_labels=True, first=2000)
               + write_pairs(path, 8, seed=3, first=3000))
    return path, records


def rewards_of(run, prompts, completions):
    from tfpref.rewards import RewardModelReward

    return RewardModelReward(run)(list(prompts), list(completions))


def test_reward_model_on_a_pairs_file_by_source(runs, grouped_pairs):
    path, records = grouped_pairs
    # Batches of 4 (the groups' sizes are multiples of it): fewer shapes for XLA to compile.
    done = run_cli_in_process(evaluate_main, ["--model_dir", runs["rm"], "--data", str(path), "--group_by", "source",
                                              "--batch_size", "4"])
    assert done.returncode == 0, done.stderr
    assert "by source:" in done.stdout and MISSING in done.stdout and "human_pairs/metrics.json" in done.stdout

    directory = report_dir(runs["rm"], str(path))
    with open(f"{directory}/metrics.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["split"] == "all" and report["data"] == str(path) and report["group_by"] == "source"
    assert report["examples"] == len(records)  # every record, no split of the file
    groups = report["groups"]
    assert list(groups) == ["forum", "web", MISSING]
    assert [groups[g]["examples"] for g in groups] == [12, 20, 8]

    # Accuracy by hand, from the run's rewards of each completion.
    chosen, rejected = rewards_of(runs["rm"], [r["prompt"] for r in records] * 2,
                                  [r["chosen"] for r in records] + [r["rejected"] for r in records]).reshape(2, -1)
    correct = chosen > rejected
    sources = np.array([r.get("source", MISSING) for r in records])
    overall = report["metrics"]["accuracy"]
    assert abs(overall - correct.mean()) <= 1 / len(records) + 1e-6  # at most a near-tie apart
    for name, group in groups.items():
        assert abs(group["metrics"]["accuracy"] - correct[sources == name].mean()) <= 1 / group["examples"] + 1e-6
    # Overall accuracy is the example-weighted mean of the groups' accuracies.
    weighted = sum(g["metrics"]["accuracy"] * g["examples"] for g in groups.values()) / report["examples"]
    assert overall == pytest.approx(weighted, abs=1e-6)
    assert groups["web"]["metrics"]["accuracy"] > 0.8 > 0.2 > groups["forum"]["metrics"]["accuracy"]

    events = scalar_events(directory)
    assert events["all/accuracy"] == [pytest.approx(overall)]
    assert events["source=forum/accuracy"] == [pytest.approx(groups["forum"]["metrics"]["accuracy"])]
    assert not (runs["root"] / "rm" / "eval" / "metrics.json").exists()  # the run's own report is elsewhere


def test_a_file_of_pairs_without_prompts_is_evaluated_whole(runs, tmp_path):
    # Human-judged pairs often share the prompt "": one prompt, which a split by prompt would give
    # wholly to one split (not the training one).
    path = tmp_path / "no_prompts.jsonl"
    records = write_pairs(path, 10, seed=6)
    path.write_text("".join(json.dumps({**r, "prompt": ""}) + "\n" for r in records), encoding="utf-8")
    report = evaluate_run(runs["rm"], data=str(path))
    assert report["examples"] == 10 and 0 <= report["metrics"]["accuracy"] <= 1


def test_reward_model_trained_on_pairs_is_judged_on_ratings_by_correlation(runs, tmp_path):
    rng = np.random.default_rng(4)
    records = []
    for i in range(6):  # 4 completions per prompt, fewer x (a higher rating) is better
        plain = f"    return value + {rng.integers(100)}\n"
        for x in range(4):
            completion = plain.replace(" ", "x", 2 * x)
            records.append({"prompt": f"def rated_{i}(value):\n", "completion": completion, "rating": 5.0 - x})
    records.append({"prompt": "def alone(value):\n", "completion": "    return 1\n", "rating": 3.0})  # no pair
    path = tmp_path / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")

    report = evaluate_run(runs["rm"], data=str(path))
    metrics = report["metrics"]
    assert report["examples"] == len(records) and "loss" not in metrics  # a squared error it never trained on
    rewards = rewards_of(runs["rm"], [r["prompt"] for r in records], [r["completion"] for r in records])
    ratings = np.array([r["rating"] for r in records])
    assert metrics["correlation"] == pytest.approx(np.corrcoef(rewards, ratings)[0, 1], abs=1e-3)
    right = [rewards[a] > rewards[b] for a in range(len(records)) for b in range(len(records))
             if records[a]["prompt"] == records[b]["prompt"] and ratings[a] > ratings[b]]
    assert report["implied_pairs"] == len(right) == 6 * 6
    assert abs(metrics["accuracy"] - np.mean(right)) <= 1 / len(right) + 1e-6


def test_implied_pairs_count_each_pair_once_and_ties_as_wrong():
    prompts = ["a", "a", "a", "b", "b"]
    targets = [3.0, 1.0, 2.0, 1.0, 1.0]  # b's ratings are equal: no pair
    rewards = [0.5, 0.1, 0.1, 9.0, 0.0]
    # a's pairs: (3 > 1) right, (3 > 2) right, (2 > 1) a reward tie: wrong.
    assert implied_pair_sums(prompts, targets, rewards) == (2, 3)
    assert implied_pair_sums(prompts, targets, rewards, min_gap=1.0) == (1, 1)  # only 3 vs 1
    assert implied_pair_sums(prompts, targets, rewards, block=1) == (2, 3)


def test_reward_losses_on_files_measure_what_the_file_says():
    from tfpref.config import RunConfig

    config = RunConfig()
    for trained, kind, evaluated in [("bradley_terry", "pairwise", "bradley_terry"),
                                     ("bradley_terry", "rating", "regression"),
                                     ("bradley_terry", "clicks", "bce"),
                                     ("regression", "pairwise", "bradley_terry"),
                                     ("regression", "rating", "regression"),
                                     ("plackett_luce", "pairwise", "plackett_luce"),
                                     ("bce", "rating", "regression")]:
        config.align.reward_loss = trained
        assert file_reward_loss(config, kind) == evaluated, (trained, kind)


def test_a_language_model_on_a_text_file_reports_its_perplexity(runs, tmp_path):
    import tensorflow as tf

    from tfpref.data.tokenizer import BOS_ID, EOS_ID, ByteTokenizer
    from tfpref.models.logprobs import sequence_logprobs
    from tfpref.runs import load_run

    # One chunk, BOS and EOS around it: --seq_len + 1 tokens, one packed window (a packed corpus's
    # last, incomplete window is not an example).
    text = "def f(value):\n    return 12345\n"
    assert len(text.encode("utf-8")) + 2 == 32 + 1
    path = tmp_path / "snippet.py"
    path.write_text(text, encoding="utf-8")
    report = evaluate_run(runs["lm"], data=str(path))
    metrics = report["metrics"]
    assert report["examples"] == 1 and report["split"] == "all" and "samples" not in report
    _, model, _ = load_run(runs["lm"])
    ids = np.concatenate([[BOS_ID], ByteTokenizer().encode(text), [EOS_ID]]).astype(np.int32)[None]
    logprobs = sequence_logprobs(model, tf.constant(ids), tf.ones(ids.shape, tf.bool)).numpy()
    assert metrics["nll"] == pytest.approx(-logprobs.mean(), rel=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["nll"]), rel=1e-6)

    # Text like its training corpus is likelier than letters at random.
    like = write_tiny_corpus(str(tmp_path), functions=40)
    rng = np.random.default_rng(0)
    unlike = tmp_path / "random.txt"
    unlike.write_text("".join(rng.choice(list("qzjxkw \n"), 4000)), encoding="utf-8")
    assert (evaluate_run(runs["lm"], data=like)["metrics"]["perplexity"]
            < evaluate_run(runs["lm"], data=str(unlike))["metrics"]["perplexity"])
    with open(f"{report_dir(runs['lm'], str(unlike))}/metrics.json", encoding="utf-8") as f:
        assert json.load(f)["data"] == str(unlike)


def test_a_classifier_on_a_labelled_file_reports_precision_recall_f1(runs, tmp_path):
    labeled = write_labeled(tmp_path / "train.jsonl")
    classifier = tiny_config(tmp_path / "clf", labeled, objective="classify", init_from=runs["lm"],
                             freeze_backbone=True, train_steps=30, batch_size=16, learning_rate=3e-2)
    train(classifier, show_progress=False)
    other = tmp_path / "other.jsonl"
    with open(other, "w", encoding="utf-8") as f:  # the same rule, other snippets: 30 of each class
        for i in range(60):
            text = f"item_{i} = {7 * i}\n" if i % 2 else f"item_{i}={7 * i}\n"
            f.write(json.dumps({"text": text, "label": "spaced" if i % 2 else "tight"}) + "\n")
    done = run_cli_in_process(evaluate_main, ["--model_dir", str(tmp_path / "clf"), "--data", str(other)])
    assert done.returncode == 0, done.stderr
    assert "confusion matrix" in done.stdout and "macro_f1" in done.stdout
    with open(f"{report_dir(str(tmp_path / 'clf'), str(other))}/metrics.json", encoding="utf-8") as f:
        report = json.load(f)
    matrix = np.array(report["confusion_matrix"])  # rows: true spaced, tight
    assert report["classes"] == ["spaced", "tight"] and matrix.sum(axis=1).tolist() == [30, 30]
    metrics = report["metrics"]
    for i, name in enumerate(report["classes"]):
        precision, recall = matrix[i, i] / max(matrix[:, i].sum(), 1), matrix[i, i] / matrix[i].sum()
        assert metrics[f"precision/{name}"] == pytest.approx(precision)
        assert metrics[f"recall/{name}"] == pytest.approx(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert metrics[f"f1/{name}"] == pytest.approx(f1)
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / 60)


@pytest.mark.slow
def test_dpo_on_a_new_pairs_file_reports_implicit_reward_accuracy_and_margin(runs, tmp_path):
    from tfpref.data.pipeline import ArrayData
    from tfpref.data.preferences import load_preferences, preference_arrays
    from tfpref.objectives.dpo import DEFAULT_BETA, REFERENCE_FILE, reference_logprobs
    from tfpref.rl.reference import reference_model
    from tfpref.runs import load_run

    pairs = tmp_path / "train_pairs.jsonl"
    write_pairs(pairs, 96, seed=0)
    train(tiny_config(tmp_path / "dpo", pairs, objective="dpo", init_from=runs["lm"], train_steps=10,
                      learning_rate=1e-2), show_progress=False)
    cache = (tmp_path / "dpo" / REFERENCE_FILE).read_bytes()
    other = tmp_path / "other_pairs.jsonl"
    write_pairs(other, 24, seed=5, first=500)

    report = evaluate_run(str(tmp_path / "dpo"), data=str(other))
    metrics = report["metrics"]
    assert report["examples"] == 24 and "policy_samples" not in report  # no sampling unless asked
    config, policy, _ = load_run(str(tmp_path / "dpo"))
    data = ArrayData(preference_arrays(load_preferences(str(other)), config.data.seq_len, pairs_only=True),
                     config.data.seq_len)
    reference = reference_logprobs(reference_model(config), data)  # the file's own, not the cached ones
    chosen, rejected = (DEFAULT_BETA * (reference_logprobs(policy, data) - reference)).T
    assert metrics["reward_margin"] == pytest.approx(np.mean(chosen - rejected), abs=1e-4)
    assert abs(metrics["reward_accuracy"] - np.mean(chosen > rejected)) <= 1 / 24 + 1e-6
    assert (tmp_path / "dpo" / REFERENCE_FILE).read_bytes() == cache  # the run's cache is left alone


def test_group_by_without_data_or_with_a_field_no_record_has_is_a_one_line_error(runs, grouped_pairs):
    path, _ = grouped_pairs
    for args, message in [(["--group_by", "source"], "--group_by needs --data"),
                          (["--data", str(path), "--group_by", "rater"], "--group_by rater: no record of"),
                          (["--data", str(path), "--split", "test"], "--split and --data")]:
        done = run_cli_in_process(evaluate_main, ["--model_dir", runs["rm"], *args])
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and message in done.stderr, done.stderr
    with pytest.raises(UserError, match="needs a JSONL --data file"):
        group_records(str(path).replace(".jsonl", ".txt"), "source")


def test_group_keys_of_missing_and_non_string_values(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": 1, "source": "web"}, {"id": 2, "source": 3}, {"id": 3}, {"id": 4, "source": {"b": 1, "a": 2}},
        {"id": 5, "source": "web"}]), encoding="utf-8")
    groups = group_records(str(path), "source")
    assert list(groups) == ["3", "web", '{"a": 2, "b": 1}', MISSING]  # by name, (missing) last
    assert [r["id"] for r in groups["web"]] == [1, 5] and [r["id"] for r in groups[MISSING]] == [3]
