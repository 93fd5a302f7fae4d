"""Preference data: the four formats, the comparison form, validation errors, the labelling round trip."""
import json

import numpy as np
import pytest

from tfpref.data.preferences import encode_completion, load_preferences, preference_arrays
from tfpref.errors import UserError
from tfpref.cli.preferences import main
from tfpref.preferences import export_for_labelling, import_labelled, simulated_labels, simulated_ranks


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_pairwise_records_keep_order_margin_and_ignore_extra_fields(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "def f():\n", "chosen": "    return 1\n", "rejected": "  return 1\n", "id": 7,
         "rater": {"name": "ann"}},
        {"prompt": "x = ", "chosen": "1\n", "rejected": "1 \n", "margin": 2.0, "annotator_p": 0.9}])
    data = load_preferences(path)
    assert data.kind == "pairwise" and len(data.items) == 2
    assert data.comparisons()[1] == ("x = ", "1\n", "1 \n", 2.0, 0.9)
    assert data.noise_ceiling() is None  # the first pair has no annotator probability


def test_rankings_give_every_ordered_pair_and_ratings_pair_within_a_prompt(tmp_path):
    ranking = load_preferences(write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 3, 1]}]))
    assert [c[1:3] for c in ranking.comparisons()] == [("c", "a"), ("c", "b"), ("a", "b")]
    ratings = load_preferences(write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "p", "completion": "a", "rating": [1, 2]},   # two raters
        {"prompt": "p", "completion": "a", "rating": 4.5},      # a third one, on another row
        {"prompt": "p", "completion": "b", "rating": 2},
        {"prompt": "q", "completion": "c", "rating": 5}]))
    a = next(p for p in ratings.items if p.completions == ("a",))
    assert a.target == pytest.approx(2.5) and a.weight == 3.0
    assert [c[1:3] for c in ratings.comparisons()] == [("a", "b")]
    clicks = load_preferences(write_jsonl(tmp_path / "c.jsonl", [
        {"prompt": "p", "completion": "a", "clicks": 3, "impressions": 10}]))
    assert clicks.kind == "clicks" and clicks.items[0].target == pytest.approx(0.3)
    arrays = preference_arrays(clicks, seq_len=16)
    assert arrays["token_ids"].shape == (1, 1, 17) and arrays["target"][0] == pytest.approx(0.3)


def test_encoding_keeps_the_end_of_long_texts_and_marks_the_completion():
    ids, start = encode_completion("p" * 10, "abc", seq_len=8)
    assert len(ids) == 9 and ids[0] == 1 and start == 6  # BOS, 5 prompt bytes, 3 completion bytes
    ids, start = encode_completion("pp", "c" * 20, seq_len=8)
    assert len(ids) == 9 and start == 1


PAIR = {"prompt": "ok", "chosen": "a", "rejected": "b"}
RANKING = {"prompt": "ok", "completions": ["a", "b"], "ranking": [2, 1]}
RATING = {"prompt": "ok", "completion": "a", "rating": 3}
CLICKS = {"prompt": "ok", "completion": "a", "clicks": 1, "impressions": 4}


@pytest.mark.parametrize("good, bad, message", [
    (PAIR, {"prompt": "p", "chosen": "a"}, "not a preference record"),
    (PAIR, {"prompt": "p", "chosen": "a", "rejected": 3}, "field 'rejected' must be a string"),
    (PAIR, {"prompt": "p", "chosen": "a", "rejected": "a"}, "field 'rejected' is identical"),
    (PAIR, {"prompt": "p", "chosen": "  ", "rejected": "a"}, "field 'chosen' is empty"),
    (PAIR, {"chosen": "a", "rejected": "b"}, "field 'prompt' is missing"),
    (RANKING, {"prompt": "p", "completions": ["a", "b"], "ranking": [1, 1]}, "ties are not allowed"),
    (RANKING, {"prompt": "p", "completions": ["a", ""], "ranking": [1, 2]}, r"field 'completions\[1\]' is empty"),
    (RANKING, {**RANKING, "annotator_rewards": [0.1, 0.2]}, "field 'annotator_temperature' is missing"),
    (RANKING, {**RANKING, "annotator_rewards": [0.1], "annotator_temperature": 0.01},
     "field 'annotator_rewards' must be a list of 2 numbers"),
    (RANKING, {**RANKING, "annotator_rewards": [0.1, "x"], "annotator_temperature": 0.01},
     r"field 'annotator_rewards\[1\]' must be a number"),
    (RANKING, {**RANKING, "annotator_rewards": [0.1, 0.2], "annotator_temperature": 0},
     "field 'annotator_temperature' must be positive"),
    (RATING, {"prompt": "p", "completion": "a", "rating": "good"}, "field 'rating' must be a number"),
    (CLICKS, {"prompt": "p", "completion": "a", "clicks": 5, "impressions": 3}, "field 'clicks' must be between"),
    (CLICKS, {"prompt": "p", "completion": "a", "clicks": 1, "impressions": 0}, "field 'impressions' must be positive"),
])
def test_bad_records_name_file_line_and_field(tmp_path, good, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [good, bad])
    with pytest.raises(UserError, match=message) as error:
        load_preferences(path)
    assert str(error.value).startswith(f"{path}:2")


def test_mixed_formats_and_bad_bytes_are_refused(tmp_path):
    mixed = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                               {"prompt": "p", "completion": "a", "rating": 1}])
    with pytest.raises(UserError, match=r"m.jsonl:2: a rating record in a pairwise file"):
        load_preferences(mixed)
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "\xff"}\n')
    with pytest.raises(UserError, match=r"b.jsonl:2: not valid UTF-8"):
        load_preferences(str(binary))


def test_labelling_round_trip_through_csv(tmp_path):
    pairs = [{"prompt": f"p{i}", "chosen": f"good, {i}\n", "rejected": f"bad \"{i}\"\n"} for i in range(6)]
    source = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    assert export_for_labelling(source, str(tmp_path / "batch.csv")) == 6
    import csv

    with open(tmp_path / "batch.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["completion_a"] for r in rows} != {p["chosen"] for p in pairs}  # sides are shuffled
    for row in rows[:5]:  # a rater who agrees with the original labels; the last row left blank
        row["preferred"] = "A" if row["completion_a"].startswith("good") else "b"
    with open(tmp_path / "labelled.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert import_labelled(str(tmp_path / "labelled.csv"), str(tmp_path / "back.jsonl")) == (5, 1)
    back = load_preferences(str(tmp_path / "back.jsonl"))
    assert [c[:3] for c in back.comparisons()] == [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs[:5]]
    rows[0]["preferred"] = "maybe"
    with open(tmp_path / "bad.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(UserError, match=r"bad.csv:2: field 'preferred' must be a or b"):
        import_labelled(str(tmp_path / "bad.csv"), str(tmp_path / "never.jsonl"))


def test_cli_refuses_to_overwrite_an_existing_output(tmp_path, capsys):
    source = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    target = tmp_path / "out.csv"
    target.write_text("precious", encoding="utf-8")
    assert main(["export", "--input", source, "--output", str(target)]) == 2
    assert "exists" in capsys.readouterr().err and target.read_text(encoding="utf-8") == "precious"


def test_simulated_annotator_follows_bradley_terry():
    rng = np.random.default_rng(0)
    a_wins, p_a = simulated_labels(np.full(20000, 0.02), np.zeros(20000), temperature=0.01, rng=rng)
    expected = 1 / (1 + np.exp(-2.0))
    assert p_a[0] == pytest.approx(expected) and a_wins.mean() == pytest.approx(expected, abs=0.01)


def test_simulated_rankings_order_pairs_as_bradley_terry_does():
    # Plackett-Luce's pairwise marginals are Bradley-Terry's: a ranking's pairs share the pairs' ceiling.
    rng = np.random.default_rng(0)
    ranks = simulated_ranks(np.tile([0.02, 0.0, -0.01], (20000, 1)), temperature=0.01, rng=rng)
    assert sorted(ranks[0]) == [1, 2, 3]
    for better, worse, gap in ((0, 1, 2.0), (0, 2, 3.0), (1, 2, 1.0)):
        assert (ranks[:, better] < ranks[:, worse]).mean() == pytest.approx(1 / (1 + np.exp(-gap)), abs=0.01)


def test_simulated_rankings_carry_the_probability_of_each_pair(tmp_path):
    record = {"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 1, 3],
              "annotator_rewards": [0.0, 0.01, 0.03], "annotator_temperature": 0.01}
    data = load_preferences(write_jsonl(tmp_path / "r.jsonl", [record]))
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected = [("b", "a", sigmoid(1.0)), ("b", "c", sigmoid(-2.0)), ("a", "c", sigmoid(-3.0))]
    assert [c[1:3] for c in data.comparisons()] == [e[:2] for e in expected]
    assert [c[4] for c in data.comparisons()] == pytest.approx([e[2] for e in expected])
    assert data.noise_ceiling() == pytest.approx(np.mean([max(e[2], 1 - e[2]) for e in expected]))
    annotator_p = preference_arrays(data, seq_len=8)["annotator_p"]  # best-first rows: b, a, c
    assert annotator_p.shape == (1, 3, 3) and annotator_p[0, 0, 2] == pytest.approx(sigmoid(-2.0))


def test_make_names_a_missing_policy_dir_and_writes_nothing(tmp_path, capsys):
    output = tmp_path / "pairs.jsonl"
    assert main(["make", "--policy_dir", str(tmp_path / "nope"), "--output", str(output)]) == 2
    assert "--policy_dir" in capsys.readouterr().err and not output.exists()


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "3"], "--batch_size 3"),
    (["--completions_per_prompt", "4", "--batch_size", "6"], "--batch_size 6"),
    (["--completions_per_prompt", "1"], "--completions_per_prompt 1"),
])
def test_make_refuses_a_batch_that_does_not_hold_whole_groups(tmp_path, capsys, flags, message):
    output = tmp_path / "pairs.jsonl"
    assert main(["make", "--policy_dir", str(tmp_path), "--output", str(output), *flags]) == 2
    assert message in capsys.readouterr().err and not output.exists()


def test_labelling_round_trip_through_jsonl(tmp_path):
    source = write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": "p", "completions": ["b", "a", "c"],
                                                      "ranking": [2, 1, 3]}])
    assert export_for_labelling(source, str(tmp_path / "batch.jsonl")) == 3
    rows = [json.loads(line) for line in (tmp_path / "batch.jsonl").read_text(encoding="utf-8").splitlines()]
    order = {"a": 0, "b": 1, "c": 2}
    for row in rows:  # the rater agrees with the ranking
        row["preferred"] = "a" if order[row["completion_a"]] < order[row["completion_b"]] else "b"
    labelled = write_jsonl(tmp_path / "labelled.jsonl", rows)
    assert import_labelled(labelled, str(tmp_path / "back.jsonl")) == (3, 0)
    back = load_preferences(str(tmp_path / "back.jsonl"))
    assert sorted(c[1:3] for c in back.comparisons()) == [("a", "b"), ("a", "c"), ("b", "c")]
