"""Labelling and A/B bookkeeping of the server: durable journals, items, records tfpref can train on."""
import csv
import json
import math
import threading

import pytest

from tfpref.data.preferences import load_preferences
from tfpref.errors import UserError
from tfpref.serve.ab_stats import ab_report, two_proportion_p_value, wilson_interval
from tfpref.serve.click_log import ClickLog
from tfpref.serve.journal import Journal
from tfpref.serve.label_items import label_record, read_items
from tfpref.serve.labelling import LabellingQueue


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_journal_appends_once_per_key_and_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    journal = Journal(str(path), key_field="item_id")
    assert journal.append({"item_id": "a", "x": 1}) and not journal.append({"item_id": "a", "x": 2})
    assert journal.append({"item_id": "b", "x": "é"})
    journal.close()
    with open(path, "ab") as f:  # a crash in the middle of writing a third line
        f.write(b'{"item_id": "c", "x"')
    reopened = Journal(str(path), key_field="item_id")
    assert [r["item_id"] for r in reopened.records()] == ["a", "b"] and "b" in reopened and "c" not in reopened
    assert path.read_bytes().endswith(b"\n")
    reopened.append({"item_id": "c"})
    assert [json.loads(line)["item_id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["a", "b", "c"]


def test_journal_threads_never_interleave_or_duplicate(tmp_path):
    journal = Journal(str(tmp_path / "j.jsonl"), key_field="id")
    # 8 writers, each sending every id once, with long values: every id lands exactly once, whole.
    threads = [threading.Thread(target=lambda: [journal.append({"id": i, "text": "x" * 5000}) for i in range(50)])
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == list(range(50))


def test_journal_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="its directory does not exist"):
        Journal(str(tmp_path / "missing" / "x.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2"):
        Journal(str(tmp_path / "bad.jsonl"))


def test_items_from_every_input_and_records_train_on(tmp_path):
    exported = tmp_path / "batch.csv"
    with open(exported, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["id", "prompt", "completion_a", "completion_b", "preferred"])
        writer.writeheader()
        writer.writerow({"id": 0, "prompt": "p", "completion_a": "a", "completion_b": "b", "preferred": ""})
    items = read_items(str(exported))
    assert [(i.task, i.completions) for i in items] == [("pair", ("a", "b"))]
    assert read_items(str(exported))[0].item_id == items[0].item_id  # stable across restarts

    ranking = write_jsonl(tmp_path / "ranked.jsonl", [
        {"prompt": "", "completions": ["x", "y", "z"], "ranking": [1, 2, 3], "source": "extra field"},
        {"prompt": "q", "chosen": "good", "rejected": "bad"}][:1])
    [rank_item] = read_items(ranking)
    assert rank_item.task == "rank" and sorted(rank_item.completions) == ["x", "y", "z"]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad"}])
    [pair_item] = read_items(pairs)
    assert pair_item.task == "pair" and sorted(pair_item.completions) == ["bad", "good"]
    rated = write_jsonl(tmp_path / "rated.jsonl", [{"prompt": "q", "completion": "c", "rating": 3}])
    assert read_items(rated)[0].task == "rate"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def f(\nimport\n", encoding="utf-8")
    assert [(i.prompt, i.completions, i.count) for i in read_items(str(prompts), "rank", 3)] == [
        ("def f(", None, 3), ("import", None, 3)]

    # Each task's record is one of tfpref's formats, and the loader reads it back.
    pair_record = label_record(pair_item, pair_item.completions, {"choice": pair_item.completions.index("good")}, 5)
    assert (pair_record["chosen"], pair_record["rejected"]) == ("good", "bad")
    rank_record = label_record(rank_item, ("x", "y", "z"), {"order": [2, 0, 1]}, 5)
    assert rank_record["ranking"] == [2, 3, 1]
    rate_record = label_record(read_items(rated)[0], ("c",), {"rating": 5}, 5)
    for name, record in (("p", pair_record), ("r", rank_record), ("t", rate_record)):
        data = load_preferences(write_jsonl(tmp_path / f"{name}_out.jsonl", [record]))
        assert data.kind == {"p": "pairwise", "r": "ranking", "t": "rating"}[name]
    assert load_preferences(str(tmp_path / "r_out.jsonl")).items[0].order == (2, 0, 1)

    for bad, answer in ((pair_item, {"choice": 2}), (pair_item, {"choice": True}), (rank_item, {"order": [0, 0, 1]}),
                        (read_items(rated)[0], {"rating": 6})):
        with pytest.raises(UserError):
            label_record(bad, bad.completions, answer, 5)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="nothing to label"):
        read_items(str(tmp_path / "empty.txt"))


def test_queue_leases_skips_resumes_and_saves_once(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a\nb\nc\n")
    items = read_items(str(prompts), "pair")
    sampled = []

    def sample(item):
        sampled.append(item.item_id)
        return (item.prompt + "1", item.prompt + "2")

    output = str(tmp_path / "labels.jsonl")
    queue = LabellingQueue(items, Journal(output, key_field="item_id"), sample=sample)
    first, second = queue.next_item("alice"), queue.next_item("bob")
    assert first["prompt"] == "a" and second["prompt"] == "b"  # leased: two labellers, two items
    assert queue.next_item("alice")["prompt"] == "a"           # still alice's
    queue.skip("alice", first["item_id"])
    assert queue.next_item("alice")["prompt"] == "c"
    saved = queue.submit(first["item_id"], {"choice": 1})
    assert saved == {"saved": True, "duplicate": False, "progress": {"done": 1, "total": 3}}
    assert queue.submit(first["item_id"], {"choice": 0})["duplicate"]  # sent twice: saved once
    with pytest.raises(UserError, match="unknown item_id"):
        queue.submit("nope", {"choice": 0})
    assert sampled.count(first["item_id"]) == 1  # the shown completions are what is saved

    restarted = LabellingQueue(read_items(str(prompts), "pair"), Journal(output, key_field="item_id"), sample=sample)
    assert restarted.progress() == {"done": 1, "total": 3}
    assert restarted.next_item("carol")["prompt"] == "b"
    [record] = [json.loads(line) for line in open(output)]
    assert (record["chosen"], record["rejected"]) == ("a2", "a1")


def test_ab_statistics_match_the_formulas():
    # Wilson: centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    z, n, p = 1.959963984540054, 100, 0.1
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    assert wilson_interval(10, 100) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # Two-proportion z: 52/1000 vs 81/1000, pooled 0.0665.
    pooled = 133 / 2000
    z = (0.052 - 0.081) / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert two_proportion_p_value(52, 1000, 81, 1000) == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert two_proportion_p_value(0, 10, 0, 10) == 1.0 and two_proportion_p_value(1, 0, 1, 1) is None
    report = ab_report({"A": (1000, 52), "B": (1000, 81)})
    assert report["arms"]["A"]["ctr"] == 0.052 and report["p_value"] < 0.05


def test_click_log_is_durable_and_trains_as_clicks(tmp_path):
    path = str(tmp_path / "ab.jsonl")
    log = ClickLog(path)
    shown = [log.impression("A", "headline for cats", "Cats <script>x</script>"),
             log.impression("B", "headline for cats", "Dogs"), log.impression("A", "q", "r")]
    assert log.click(shown[0]) and not log.click(shown[0])
    with pytest.raises(UserError):
        log.click("unknown")
    assert log.counts() == {"A": (2, 1), "B": (1, 0)}
    assert ClickLog(path).counts() == {"A": (2, 1), "B": (1, 0)}  # rebuilt from the events after a restart
    data = load_preferences(path)
    assert data.kind == "clicks" and sorted(p.target for p in data.items) == [0.0, 0.0, 1.0]
