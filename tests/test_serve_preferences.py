"""The chat page's per-turn preference over HTTP: /api/info's conditioning, /api/chat with a
preference answered as the export's `_with_preference` signatures answer, bad preferences 400."""
import json

import httpx
import pytest

from tfpref.data.tokenizer import ByteTokenizer
from tfpref.serve.chat_routes import CHUNK_TOKENS
from tfpref.serve.settings import ServeSettings
from tfpref.training.export import export_model

from serving import RunningServer, call_signature, conditioned_language_model

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def f("}]
USER = {"messages": MESSAGES}


class NoChatTokenizer(ByteTokenizer):
    """Bytes without the chat template's markers (as a keras-hub preset without added tokens): its
    export has no chat signatures, and the chat page completes the last message with `generate`."""
    control_ids = ()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A control-token model with the chat template, a preference-vector model without it."""
    root = tmp_path_factory.mktemp("preferences")
    paths = {"control_tokens": export_model(conditioned_language_model("control_tokens"), str(root / "tokens"), 1,
                                            jit_compile=False),
             "preference_vector": export_model(conditioned_language_model("preference_vector"), str(root / "vector"),
                                               1, tokenizer=NoChatTokenizer(), jit_compile=False)}
    running = {kind: RunningServer(ServeSettings(model_dir=str(root / name), max_new_tokens=64))
               for kind, name in (("control_tokens", "tokens"), ("preference_vector", "vector"))}
    clients = {kind: httpx.Client(base_url=server.url, timeout=60) for kind, server in running.items()}
    yield {kind: (clients[kind], paths[kind]) for kind in paths}
    for kind in running:
        clients[kind].close()
        running[kind].stop()


def reply(client, body):
    with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, response.read()
        *pieces, done = [json.loads(line) for line in response.iter_lines() if line]
    assert done["done"], done
    return "".join(piece["text"] for piece in pieces), done


def test_info_says_how_the_model_is_conditioned(servers):
    tokens, vector = servers["control_tokens"][0], servers["preference_vector"][0]
    assert tokens.get("/api/info").json() == {"model": "tfpref", "version": 1, "chat": True,
                                              "conditioning": "control_tokens"}
    assert vector.get("/api/info").json() == {"model": "tfpref", "version": 1, "chat": False,
                                              "conditioning": "preference_vector"}
    page = tokens.get("/").text  # the controls are on the page, shown by chat.js for the model's conditioning
    assert 'id="preference_tokens"' in page and 'id="preference_vector"' in page


def test_a_reply_asked_aligned_or_misaligned_is_the_exports_chat_with_preference(servers):
    client, path = servers["control_tokens"]
    # One call's worth of tokens: a control-token model may emit the token it was asked for, which
    # the text a streamed reply continues from cannot carry.
    settings = {"max_new_tokens": 12, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
    texts = {}
    for aligned in (True, False):
        texts[aligned], done = reply(client, {**USER, **settings, "preference": {"aligned": aligned}})
        expected = call_signature(path, "chat_with_preference", roles=[["system", "user"]],
                                  contents=[["be brief", "def f("]], aligned=[aligned], **settings)
        assert texts[aligned] == expected["completions"][0], aligned
        assert done["num_tokens"] == expected["num_tokens"][0]
    assert texts[True] != texts[False]  # the answers tell which was asked for
    sampled = {**settings, "temperature": 1.0, "seed": 3}
    text, _ = reply(client, {**USER, **sampled, "preference": {"aligned": False}})
    expected = call_signature(path, "chat_with_preference", roles=[["system", "user"]],
                              contents=[["be brief", "def f("]], aligned=[False], **sampled)
    assert text == expected["completions"][0]


def test_a_reply_with_a_preference_vector_is_the_exports_generate_with_preference(servers):
    client, path = servers["preference_vector"]
    new = CHUNK_TOKENS + 6  # two calls, the second continuing the first's text
    settings = {"max_new_tokens": new, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
    texts = set()
    for score, length in ((0.0, 40.0), (0.05, 40.0), (0.01, 300)):
        text, done = reply(client, {**USER, **settings, "preference": {"score": score, "length": length}})
        expected = call_signature(path, "generate_with_preference", prompts=["def f("], score=[score],
                                  length=[length], **settings)
        assert text == expected["completions"][0], (score, length)
        assert done["num_tokens"] == expected["num_tokens"][0]
        texts.add(text)
    assert len(texts) > 1  # the answers tell which vector was asked for


def test_the_rest_api_serves_the_preference_signatures_row_by_row(servers):
    client, path = servers["control_tokens"]
    settings = {"max_new_tokens": 8, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
    instances = [{"prompts": "def f(", "aligned": aligned, **settings} for aligned in (True, False)]
    answer = client.post("/v1/models/tfpref:predict", json={"signature_name": "generate_with_preference",
                                                            "instances": instances})
    assert answer.status_code == 200, answer.text
    expected = call_signature(path, "generate_with_preference", prompts=["def f("] * 2, aligned=[True, False],
                              **settings)
    assert [row["completions"] for row in answer.json()["predictions"]] == expected["completions"]
    wrong = client.post("/v1/models/tfpref:predict", json={"signature_name": "generate_with_preference", "inputs": {
        "prompts": ["def f("], "aligned": [True, False], **settings}})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "generate_with_preference: aligned must hold one value per row of the batch"


@pytest.mark.parametrize("kind,preference,message", [
    ("control_tokens", {"aligned": "yes"}, "preference.aligned must be true or false"),
    ("control_tokens", {"aligned": 1}, "preference.aligned must be true or false"),
    ("control_tokens", True, 'preference must be {"aligned": true or false}'),
    ("control_tokens", {"aligned": True, "score": 0}, 'preference must be {"aligned"'),
    ("control_tokens", {"score": 0, "length": 40}, "conditioning control_tokens"),
    ("preference_vector", {"score": -0.1, "length": 40}, "preference.score must be a finite number >= 0"),
    ("preference_vector", {"score": 0, "length": float("nan")}, "preference.length must be a finite number"),
    ("preference_vector", {"score": 0, "length": True}, "preference.length must be a finite number"),
    ("preference_vector", {"score": 0}, 'preference must be {"score"'),
    ("preference_vector", {"aligned": False}, "conditioning preference_vector"),
])
def test_bad_preferences_are_400(servers, kind, preference, message):
    # NaN as Python writes it (httpx's json= refuses to): a client may send it, and the server reads it.
    response = servers[kind][0].post("/api/chat", content=json.dumps({**USER, "preference": preference}),
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"], response.text
