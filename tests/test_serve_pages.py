"""The server's pages and their APIs, over HTTP: chat streaming, labelling, A/B clicks, headers."""
import json
import os
import re

import httpx
import numpy as np
import pytest

from tfpref.data.preferences import load_preferences
from tfpref.serve.chat_routes import CHUNK_TOKENS
from tfpref.serve.pages import STATIC_DIR
from tfpref.serve.settings import ServeSettings

from serving import RunningServer, call_signature, two_language_model_exports

XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    return two_language_model_exports(root)


@pytest.fixture(scope="module")
def server(exports):
    root = exports["root"]
    prompts = root / "prompts.txt"
    prompts.write_text("def f(\nimport\nclass A:\n", encoding="utf-8")
    settings = ServeSettings(model_dir=str(root / "a"), max_new_tokens=64, label_input=str(prompts),
                             label_output=str(root / "labels.jsonl"), label_max_new_tokens=8,
                             ab=(str(root / "a"), str(root / "b")), ab_log=str(root / "ab.jsonl"))
    running = RunningServer(settings)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def chat_lines(client, body):
    with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_pages_are_served_with_a_strict_content_security_policy(client):
    for path in ("/", "/label", "/ab", "/ab/report"):
        page = client.get(path)
        assert page.status_code == 200 and "<html" in page.text, path
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
    for name in os.listdir(STATIC_DIR):  # no page script writes markup: text goes in as text only
        if name.endswith(".js"):
            script = client.get(f"/static/{name}")
            assert script.status_code == 200
            assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", script.text), name
    assert client.get("/static/../app.py").status_code == 404  # no path leaves the static directory


def test_a_streamed_reply_is_the_exports_reply(client, exports):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi é"}]
    new = 2 * CHUNK_TOKENS + 5  # three calls
    lines = chat_lines(client, {"messages": messages, "max_new_tokens": new, "temperature": 0.0})
    *pieces, done = lines
    expected = call_signature(exports["a"], "chat", roles=[["system", "user"]], contents=[["be brief", "hi é"]],
                              max_new_tokens=new, temperature=0.0, top_k=0, top_p=1.0, seed=0)
    assert "".join(p["text"] for p in pieces) == expected["completions"][0]
    # The random model may end its reply early (then fewer calls): the stream says what the export did.
    assert done == {"done": True, "finished": expected["finished"][0], "num_tokens": expected["num_tokens"][0]}
    assert len(pieces) >= min(3, -(-expected["num_tokens"][0] // CHUNK_TOKENS)) - 1
    sampled = chat_lines(client, {"messages": messages, "max_new_tokens": 20, "temperature": 1.0, "seed": 3})
    assert sampled[-1]["done"] and 0 < sampled[-1]["num_tokens"] <= 20
    info = client.get("/api/info").json()
    assert info == {"model": "tfpref", "version": 1, "chat": True, "conditioning": "none"}


@pytest.mark.parametrize("body,message", [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "last message"),
    ({"messages": [{"role": "user", "content": "x"}], "max_new_tokens": 65}, "max_new_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "preference": {"aligned": False}}, "takes none"),
    ([1, 2], "JSON object"),
])
def test_bad_chat_requests_are_400(client, body, message):
    response = client.post("/api/chat", json=body)
    assert response.status_code == 400 and message in response.json()["error"]


def test_labelling_over_http_saves_each_label_once_in_a_training_format(client, exports):
    first = client.get("/label/api/next", params={"labeller": "ann"}).json()
    assert first["progress"] == {"done": 0, "total": 3}
    item = first["item"]
    assert item["task"] == "pair" and len(item["completions"]) == 2 and item["prompt"] == "def f("
    # Sampled from the served model, as the export samples them.
    assert all(isinstance(c, str) for c in item["completions"])
    assert client.get("/label/api/next", params={"labeller": "bob"}).json()["item"]["prompt"] == "import"
    bad = client.post("/label/api/submit", json={"item_id": item["item_id"], "choice": 7})
    assert bad.status_code == 400 and "choice" in bad.json()["error"]
    assert client.post("/label/api/submit", json={"item_id": "nope", "choice": 0}).status_code == 400
    saved = client.post("/label/api/submit", json={"item_id": item["item_id"], "choice": 1}).json()
    assert saved == {"saved": True, "duplicate": False, "progress": {"done": 1, "total": 3}}
    again = client.post("/label/api/submit", json={"item_id": item["item_id"], "choice": 0}).json()
    assert again["duplicate"] and again["progress"]["done"] == 1
    assert client.post("/label/api/skip", json={"item_id": "nope", "labeller": "ann"}).status_code == 400
    data = load_preferences(str(exports["root"] / "labels.jsonl"))
    assert data.kind == "pairwise" and len(data.items) == 1
    record = json.loads((exports["root"] / "labels.jsonl").read_text().splitlines()[0])
    assert (record["chosen"], record["rejected"]) == (item["completions"][1], item["completions"][0])


def test_ab_impressions_and_clicks_make_a_report_and_clicks_data(client, exports):
    arms = []
    for _ in range(12):
        shown = client.post("/ab/api/impression", json={"prompt": "A headline about "}).json()
        assert set(shown) == {"impression_id", "completion"}
        arms.append(shown)
    clicked = client.post("/ab/api/click", json={"impression_id": arms[0]["impression_id"]}).json()
    assert clicked == {"clicked": True, "duplicate": False}
    assert client.post("/ab/api/click", json={"impression_id": arms[0]["impression_id"]}).json()["duplicate"]
    assert client.post("/ab/api/click", json={"impression_id": "0" * 16}).status_code == 400
    assert client.post("/ab/api/impression", json={"prompt": 5}).status_code == 400
    report = client.get("/ab/report.json").json()
    assert sum(arm["impressions"] for arm in report["arms"].values()) == 12
    assert sum(arm["clicks"] for arm in report["arms"].values()) == 1
    assert report["arms"]["A"]["model"] == "a version 1" and report["arms"]["B"]["model"] == "b version 1"
    assert report["p_value"] is None or 0.0 <= report["p_value"] <= 1.0
    data = load_preferences(str(exports["root"] / "ab.jsonl"))
    assert data.kind == "clicks" and sum(p.weight for p in data.items) == 12
    # Both arms are the served models themselves: /v1/models/a and /v1/models/b.
    assert client.get("/v1/models/b").json()["model_version_status"][0]["version"] == "1"


def test_pages_of_features_not_started_are_404_with_the_flags(exports):
    running = RunningServer(ServeSettings(model_dir=str(exports["root"] / "a")))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            missing = c.get("/label")
            assert missing.status_code == 404 and "--label_input" in missing.json()["error"]
            assert c.get("/ab/report").status_code == 404
            assert c.post("/ab/api/click", json={}).status_code == 404
            assert c.get("/").status_code == 200
    finally:
        running.stop()


def test_the_token_guards_the_page_apis(exports, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("x\n")
    running = RunningServer(ServeSettings(model_dir=str(exports["root"] / "a"), token="s3cret",
                                          label_input=str(prompts), label_output=str(tmp_path / "l.jsonl")))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            assert c.get("/label").status_code == 200  # the page holds no data
            assert c.get("/label/api/next").status_code == 401
            assert c.post("/api/chat", json={"messages": [{"role": "user", "content": "x"}]}).status_code == 401
            ok = c.get("/label/api/next", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200 and ok.json()["item"]["prompt"] == "x"
    finally:
        running.stop()


def test_bad_label_and_ab_flags_are_one_line_errors(tmp_path):
    for settings, message in [
            (ServeSettings(model_dir="x", label_input="a.txt"), "go together"),
            (ServeSettings(model_dir="x", label_input="a.txt", label_output="a.txt"), "must not be"),
            (ServeSettings(model_dir="x", ab=("a",), ab_log="l.jsonl"), "two directories"),
            (ServeSettings(model_dir="x", ab=("a", "b")), "go together")]:
        with pytest.raises(Exception, match=message):
            settings.validate()
    assert not os.path.exists(tmp_path / "l.jsonl")
    np.testing.assert_equal(XSS.count("<"), 3)
