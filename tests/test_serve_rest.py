"""`tfpref serve` over HTTP: TensorFlow Serving's REST API on a running server, answers compared with
the export's own signatures, bad requests, the token, batching, new versions, the command itself.

The exports here leave XLA out (jit_compile=False): a compiled export compiles each shape bucket on
its first request, seconds apiece, and what the server does is the same either way
(test_serve_load.py serves a compiled one).
"""
import base64
import concurrent.futures
import contextlib
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from tfpref.cli import main
from tfpref.serve import codec
from tfpref.serve.errors import Retired
from tfpref.serve.settings import ServeSettings
from tfpref.serve.versions import VersionedModel
from tfpref.training.export import export_model

from helpers import REPO, run_cli_in_process
from serving import GREEDY, RunningServer, call_signature, tiny_language_model, tiny_reward_model

TOKEN = "test-token"
PROMPTS = ["def f(x):\n", "é€ utf-8 ✓"]
TEXTS = ["import os\n", "x = 1"]
ROLES = [["user"], ["system", "user", "assistant"]]
CONTENTS = [["Hi"], ["Be brief.", "add 2", "3"]]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = tiny_language_model()
    lm = export_model(model, str(root / "lm"), 1, jit_compile=False)
    reward = export_model(tiny_reward_model(root), str(root / "reward"), 3, seq_len=12, jit_compile=False)
    return SimpleNamespace(model=model, lm_run=root / "lm", lm=lm, reward_base=root / "reward" / "export",
                           reward=reward)


@pytest.fixture(scope="module")
def server(exports):
    # The reward model is served from its export base (numeric version dirs), the LM from its run dir.
    running = RunningServer(ServeSettings(model_dir=str(exports.lm_run), models={"reward": str(exports.reward_base)},
                                          port=0, token=TOKEN, max_body_bytes=64 * 1024, max_new_tokens=32,
                                          max_batch=8))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as c:
        yield c


def predict(client, body, model="tfpref", expect=200):
    response = client.post(f"/v1/models/{model}:predict", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def rows_of(columns):
    """Columnar outputs as row-format predictions (one object per row)."""
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def assert_same_outputs(served, expected):
    assert served.keys() == expected.keys()
    for name, value in expected.items():  # floats to rounding: a batch's shape may change the last bits
        if isinstance(np.ravel(value)[0] if np.size(value) else None, float):
            np.testing.assert_allclose(served[name], value, atol=1e-4, err_msg=name)
        else:
            assert served[name] == value, name


def test_status_metadata_and_health(client, exports):
    status = client.get("/v1/models/tfpref").json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get("/v1/models/tfpref/versions/1").json() == status
    assert client.get("/v1/models/reward").json()["model_version_status"][0]["version"] == "3"

    metadata = client.get("/v1/models/tfpref/metadata").json()
    assert metadata["model_spec"] == {"name": "tfpref", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"generate", "chat", "score"}
    generate = signatures["generate"]
    assert generate["inputs"]["prompts"]["dtype"] == "DT_STRING"
    assert generate["inputs"]["prompts"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert generate["inputs"]["max_new_tokens"] == {"dtype": "DT_INT32", "tensor_shape": {"dim": [],
                                                    "unknown_rank": False}, "name": "generate_max_new_tokens:0"}
    assert generate["outputs"]["logprob"]["dtype"] == "DT_FLOAT"
    assert generate["method_name"] == "tensorflow/serving/predict"
    assert client.get("/v1/models/tfpref/versions/1/metadata").json() == metadata
    reward = client.get("/v1/models/reward/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert set(reward) == {"reward", "score"}

    health = httpx.get(f"{client.base_url}/healthz").json()  # no token needed
    assert health["status"] == "ok" and health["models"]["tfpref"]["version"] == 1


def test_generate_in_both_formats_is_the_exports_answer(client, exports):
    expected = call_signature(exports.lm, "generate", prompts=PROMPTS, **GREEDY)
    columnar = predict(client, {"signature_name": "generate", "inputs": {"prompts": PROMPTS, **GREEDY}})
    assert_same_outputs(columnar["outputs"], expected)
    rows = predict(client, {"signature_name": "generate", "instances": [{"prompts": p, **GREEDY} for p in PROMPTS]})
    assert len(rows["predictions"]) == 2
    for served, alone in zip(rows["predictions"], rows_of(expected)):
        assert_same_outputs(served, alone)
    # TensorFlow Serving's default signature, named or not, is the export's main one: generate.
    assert predict(client, {"inputs": {"prompts": PROMPTS, **GREEDY}}) == columnar
    assert predict(client, {"signature_name": "serving_default", "inputs": {"prompts": PROMPTS, **GREEDY}}) == columnar
    # Bytes in TensorFlow Serving's {"b64": ...} form are the same prompt.
    encoded = [{"b64": base64.b64encode(p.encode()).decode()} for p in PROMPTS]
    assert predict(client, {"inputs": {"prompts": encoded, **GREEDY}}) == columnar
    assert predict(client, {"inputs": {"prompts": PROMPTS, **GREEDY}}, model="tfpref/versions/1") == columnar


def test_score_in_both_formats_is_the_exports_answer(client, exports):
    expected = call_signature(exports.lm, "score", texts=TEXTS)
    columnar = predict(client, {"signature_name": "score", "inputs": {"texts": TEXTS}})
    assert_same_outputs(columnar["outputs"], expected)
    # A signature with one input takes bare values as instances, and a list of them as "inputs".
    rows = predict(client, {"signature_name": "score", "instances": TEXTS})
    for served, alone in zip(rows["predictions"], rows_of(expected)):
        assert_same_outputs(served, alone)
    assert predict(client, {"signature_name": "score", "inputs": TEXTS}) == columnar


def test_chat_in_both_formats_pads_conversations_as_the_export_does(client, exports):
    padded_roles = [["user", "", ""], ROLES[1]]
    padded_contents = [["Hi", "", ""], CONTENTS[1]]
    expected = call_signature(exports.lm, "chat", roles=padded_roles, contents=padded_contents, **GREEDY)
    # Conversations of different lengths, in both formats: padded with "" (the padding role).
    columnar = predict(client, {"signature_name": "chat", "inputs": {"roles": ROLES, "contents": CONTENTS, **GREEDY}})
    assert_same_outputs(columnar["outputs"], expected)
    rows = predict(client, {"signature_name": "chat", "instances": [
        {"roles": r, "contents": c, **GREEDY} for r, c in zip(ROLES, CONTENTS)]})
    for served, alone in zip(rows["predictions"], rows_of(expected)):
        assert_same_outputs(served, alone)


def test_reward_in_both_formats_is_the_exports_answer(client, exports):
    prompts, completions = ["def f(x):\n", "q"], ["    return x\n", "a completion longer than twelve bytes"]
    expected = call_signature(exports.reward, "reward", prompts=prompts, completions=completions)["reward"]
    assert len(set(np.round(expected, 4))) == 2  # a real difference to get right
    # One output: TensorFlow Serving leaves its name out, in both formats.
    columnar = predict(client, {"inputs": {"prompts": prompts, "completions": completions}}, model="reward")
    np.testing.assert_allclose(columnar["outputs"], expected, atol=1e-5)
    rows = predict(client, {"signature_name": "reward", "instances": [
        {"prompts": p, "completions": c} for p, c in zip(prompts, completions)]}, model="reward")
    np.testing.assert_allclose(rows["predictions"], expected, atol=1e-5)


BAD_REQUESTS = [
    ("tfpref", b"{not json", 400, "the request body is not JSON"),
    ("tfpref", b'["a list"]', 400, "must be a JSON object"),
    ("tfpref", {"inputs": {"prompts": ["x"]}, "instances": []}, 400, 'either "instances"'),
    ("tfpref", {"signature_name": "nope", "inputs": {}}, 404, "has no signature 'nope' (it has chat, generate, score"),
    ("tfpref", {"inputs": {"prompt": ["x"], **GREEDY}}, 400, "unknown input 'prompt' (signature generate takes"),
    ("tfpref", {"inputs": {"prompts": ["x"]}}, 400, "missing input 'max_new_tokens'"),
    ("tfpref", {"instances": [{"prompts": "a", **GREEDY}, {"prompts": "b", **GREEDY, "temperature": 0.5}]}, 400,
     "input 'temperature' differs between instances (0.0 and 0.5)"),
    ("tfpref", {"inputs": {"prompts": ["x"], **GREEDY, "max_new_tokens": 33}}, 400,
     "max_new_tokens 33 is over this server's limit of 32 (--max_new_tokens)"),
    ("tfpref", {"inputs": {"prompts": ["x"] * 9, **GREEDY}}, 400, "9 rows in one request: this server takes at most 8"),
    ("tfpref", {"inputs": {"prompts": ["x"], **GREEDY, "max_new_tokens": "8"}}, 400,
     "input 'max_new_tokens': expected an integer"),
    ("tfpref", {"inputs": {"prompts": "x", **GREEDY}}, 400, "input 'prompts': expected a list"),
    ("tfpref", {"inputs": {"prompts": [{"b64": "%%%"}], **GREEDY}}, 400, "invalid base64"),
    # The model's own INVALID_ARGUMENT, its message without the graph's.
    ("tfpref", {"signature_name": "score", "inputs": {"texts": ["ok", ""]}}, 400, "score: empty text"),
    ("tfpref", {"signature_name": "score", "inputs": {"texts": []}}, 400, "score: empty batch"),
    ("tfpref", {"inputs": {"prompts": ["x"], **GREEDY, "max_new_tokens": 0}}, 400,
     "generate: max_new_tokens must be positive"),
    ("tfpref", {"signature_name": "chat", "inputs": {"roles": [["bot"]], "contents": [["x"]], **GREEDY}}, 400,
     "chat: a role is not one of system, user, assistant or ''"),
    ("nope", {"inputs": {}}, 404, "unknown model 'nope' (this server serves reward, tfpref)"),
    ("tfpref/versions/2", {"inputs": {"prompts": ["x"], **GREEDY}}, 404,
     "model tfpref has no version '2' available: the version policy is latest, version 1 is served"),
]


@pytest.mark.parametrize("model, body, status, message", BAD_REQUESTS,
                         ids=[f"{status}-{message[:30]}" for _, _, status, message in BAD_REQUESTS])
def test_a_bad_request_is_one_clear_error(client, model, body, status, message):
    if isinstance(body, bytes):
        response = client.post(f"/v1/models/{model}:predict", content=body)
    else:
        response = client.post(f"/v1/models/{model}:predict", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"] and message in response.json()["error"], response.json()


def test_other_bad_requests(client):
    assert client.get("/v1/models/tfpref/versions/7").status_code == 404
    assert "version 1 is served" in client.get("/v1/models/tfpref/versions/7/metadata").json()["error"]
    assert client.get("/v1/models/nope/metadata").json() == {
        "error": "unknown model 'nope' (this server serves reward, tfpref)"}
    assert client.get("/nowhere").json() == {"error": "no such endpoint: GET /nowhere"}
    assert client.delete("/v1/models/tfpref").status_code == 405


def test_a_body_over_the_limit_is_refused(client):
    big = {"signature_name": "score", "inputs": {"texts": ["x" * 70_000]}}
    response = client.post("/v1/models/tfpref:predict", json=big)  # Content-Length says it at once
    assert response.status_code == 413 and "over this server's limit of 65536 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: refused once the limit has arrived
        yield b'{"signature_name": "score", "inputs": {"texts": ["'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"]}}'
    response = client.post("/v1/models/tfpref:predict", content=chunks())
    assert response.status_code == 413 and "more than 65536 bytes" in response.json()["error"]


def test_the_token_is_required(server, client):
    body = {"signature_name": "score", "inputs": {"texts": ["x"]}}
    for headers, message in (({}, "this server needs a token"),
                             ({"Authorization": "Bearer wrong"}, "wrong token"),
                             ({"Authorization": TOKEN}, "wrong token")):
        for response in (httpx.post(f"{server.url}/v1/models/tfpref:predict", json=body, headers=headers),
                         httpx.get(f"{server.url}/v1/models/tfpref", headers=headers),
                         httpx.get(f"{server.url}/v1/models/tfpref/metadata", headers=headers)):
            assert response.status_code == 401 and message in response.json()["error"]
            assert response.headers["www-authenticate"] == "Bearer"
    assert predict(client, body)["outputs"]["num_tokens"] == [1]


def test_an_internal_failure_is_500_with_one_line_and_a_logged_traceback(server, client, monkeypatch, caplog):
    def broken(signature, inputs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(server.batcher(), "_run", broken)
    with caplog.at_level(logging.ERROR, logger="tfpref.serve"):
        response = client.post("/v1/models/tfpref:predict", json={"inputs": {"prompts": ["x"], **GREEDY}})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: ZeroDivisionError: division by zero"}
    assert any("Traceback" in (record.exc_text or "") or record.exc_info for record in caplog.records)


def hold_first_call(monkeypatch, batcher, seconds):
    """Make the batcher's next model call take `seconds` longer, so that requests queue up behind it."""
    run, first_call = batcher._run, threading.Event()

    def slow_first_call(signature, inputs):
        if not first_call.is_set():
            first_call.set()
            time.sleep(seconds)
        return run(signature, inputs)

    monkeypatch.setattr(batcher, "_run", slow_first_call)
    return first_call


def test_a_full_queue_and_a_queue_timeout_are_503(server, client, monkeypatch):
    body = {"signature_name": "score", "inputs": {"texts": ["x"]}}
    batcher = server.batcher()
    monkeypatch.setattr(batcher, "queue_size", 0)
    response = client.post("/v1/models/tfpref:predict", json=body)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"error": "the queue of model tfpref version 1 is full (0 requests waiting): "
                                        "try again later"}
    monkeypatch.setattr(batcher, "queue_size", 8)
    monkeypatch.setattr(server.app.state.settings, "queue_timeout_seconds", 0.5)
    first_call = hold_first_call(monkeypatch, batcher, 2.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(predict, client, body)
        assert first_call.wait(30)
        response = client.post("/v1/models/tfpref:predict", json={**body, "signature_name": "generate",
                                                                   "inputs": {"prompts": ["x"], **GREEDY}})
        assert response.status_code == 503
        assert "not served within the queue timeout (0.5 s)" in response.json()["error"]
        assert held.result()["outputs"]["num_tokens"] == [1]  # the one running was served


def test_concurrent_requests_are_batched_and_answered_as_alone(server, client, monkeypatch):
    requests = [{"signature_name": "generate", "inputs": {"prompts": prompts, **GREEDY}}
                for prompts in (["def f(x):\n"], ["import"], ["é€ x", "ab"], [""])]
    requests.append({"signature_name": "generate", "inputs": {"prompts": ["import"], **GREEDY, "max_new_tokens": 4}})
    requests += [{"signature_name": "chat", "inputs": {"roles": [r], "contents": [c], **GREEDY}}
                 for r, c in zip(ROLES, CONTENTS)]
    requests += [{"signature_name": "score", "instances": texts} for texts in (["a"], ["a longer text", "b"])]
    alone = [predict(client, body) for body in requests]

    # The first call waits a moment, so that the other requests are all queued behind it.
    batcher = server.batcher()
    hold_first_call(monkeypatch, batcher, 1.0)
    served, calls = batcher.requests_served, batcher.calls
    barrier = threading.Barrier(len(requests))

    def send(body):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as own:
            barrier.wait()
            return predict(own, body)

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(send, requests))
    assert batcher.requests_served - served == len(requests)
    assert batcher.calls - calls < len(requests) - 2, "the queued requests were not batched"
    for body, batched, single in zip(requests, together, alone):
        answer = "outputs" if "outputs" in single else "predictions"
        batched_rows = batched[answer] if answer == "predictions" else rows_of(batched[answer])
        single_rows = single[answer] if answer == "predictions" else rows_of(single[answer])
        assert len(batched_rows) == len(single_rows)
        for b, s in zip(batched_rows, single_rows):
            assert_same_outputs(b, s)


def test_a_new_export_version_is_served_without_a_restart(exports, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(exports.lm, run / "export" / "1")
    server = RunningServer(ServeSettings(model_dir=str(run), port=0, poll_seconds=0.2))
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            def served_version():
                return client.get("/v1/models/tfpref").json()["model_version_status"][0]["version"]

            assert served_version() == "1"
            # A half-written export (tfpref's export writes .partial-N, then renames it) is no version.
            shutil.copytree(exports.lm, run / "export" / ".partial-9")
            export_model(exports.model, str(run), 2, jit_compile=False)
            deadline = time.monotonic() + 60
            while served_version() != "2":
                assert time.monotonic() < deadline, "version 2 was not picked up"
                time.sleep(0.1)
            body = {"inputs": {"prompts": PROMPTS, **GREEDY}}
            assert predict(client, body, model="tfpref/versions/2")["outputs"]["num_tokens"] == [8, 8]
            assert "version 2 is served" in predict(client, body, model="tfpref/versions/1", expect=404)["error"]

            # A version that fails to load is logged and skipped: the served one stays.
            (run / "export" / "5").mkdir()
            (run / "export" / "5" / "saved_model.pb").write_bytes(b"not a SavedModel")
            with caplog.at_level(logging.ERROR, logger="tfpref.serve"):
                deadline = time.monotonic() + 60
                while not any("version 5 failed to load" in r.getMessage() for r in caplog.records):
                    assert time.monotonic() < deadline, "the broken version was not noticed"
                    time.sleep(0.1)
            assert served_version() == "2" and predict(client, body)["outputs"]["num_tokens"] == [8, 8]
    finally:
        server.stop()


def test_requests_queued_at_a_swap_finish_on_the_old_version(exports, tmp_path, monkeypatch):
    base = tmp_path / "base"  # an export base itself, no run directory around it
    shutil.copytree(exports.lm, base / "1")
    model = VersionedModel("tfpref", str(base), ServeSettings(model_dir=str(base)))
    old = model.current
    release, run = threading.Event(), old.batcher._run
    monkeypatch.setattr(old.batcher, "_run", lambda signature, inputs: release.wait(60) and run(signature, inputs))
    inputs, _ = codec.request_inputs({"inputs": {"prompts": PROMPTS, **GREEDY}}, old.inputs["generate"], "generate")
    running = old.batcher.submit("generate", inputs)
    queued = old.batcher.submit("generate", {**inputs, "max_new_tokens": np.array(4, np.int32)})  # another call

    shutil.copytree(exports.lm, base / ".partial-2")  # as tfpref's export writes a version: beside, then renamed
    assert not model.poll() and model.current is old
    os.replace(base / ".partial-2", base / "2")
    assert model.poll() and model.current.version == 2
    with pytest.raises(Retired):  # new requests go to version 2 (rest.py resubmits there)
        old.batcher.submit("generate", inputs)
    release.set()
    assert running.result(60)["num_tokens"].tolist() == [8, 8]
    assert queued.result(60)["num_tokens"].tolist() == [4, 4]
    assert not model.poll()  # nothing newer
    model.stop()


def _read_line(stream, timeout):
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing printed within {timeout} s"
    return stream.readline()


@pytest.mark.slow
def test_the_command_serves_until_interrupted(exports):
    env = {**os.environ, "TFPREF_SERVE_TOKEN": TOKEN}  # the token from the environment, not the command line
    server = subprocess.Popen([sys.executable, "-m", "tfpref.serve", "--model_dir", str(exports.lm_run), "--port", "0"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(server.stdout, 120)
        found = re.fullmatch(r"Serving tfpref version 1 \((.*)\) at (http://127\.0\.0\.1:\d+)/v1/models/tfpref\n", line)
        assert found, line
        url = found.group(2)
        assert httpx.get(f"{url}/v1/models/tfpref").status_code == 401
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
            assert client.get("/v1/models/tfpref").json()["model_version_status"][0]["state"] == "AVAILABLE"
            assert predict(client, {"inputs": {"prompts": PROMPTS, **GREEDY}})["outputs"]["num_tokens"] == [8, 8]
        # Ctrl-C: uvicorn shuts down gracefully, then the command exits as every tfpref command does.
        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 130
        stderr = server.stderr.read()
        assert "Traceback" not in stderr and "loaded version 1" in stderr
        assert stderr.strip().splitlines()[-1] == "interrupted"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_command_refuses_bad_flags_and_missing_exports_with_one_line(tmp_path):
    def refused(*argv):
        done = run_cli_in_process(main, ["serve", *argv])
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        return lines[0]

    assert refused("--model_dir", str(tmp_path / "missing")).endswith("missing: no such directory (give a run "
                                                                      "directory or an export base)")
    (tmp_path / "run" / "export" / ".partial-3").mkdir(parents=True)
    assert "run: no exported model (no <version>/saved_model.pb in" in refused("--model_dir", str(tmp_path / "run"))
    assert refused() == "error: --model_dir: required (a run directory, or an export base of numeric version dirs)"
    assert refused("--model_dir", "x", "--max_batch", "0") == "error: --max_batch must be positive, got 0"
    assert refused("--model", "nodir") == "error: --model nodir: expected NAME=DIR"
    assert "not a URL-safe name" in refused("--model_dir", "x", "--model_name", "a/b")
    assert refused("--port", "x").startswith("error: argument --port: invalid int value")
    with socket_in_use() as port:
        message = refused("--model_dir", "x", "--port", str(port))
        assert f"--host 127.0.0.1 --port {port}: cannot listen there" in message


@contextlib.contextmanager
def socket_in_use():
    """A port some other socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_help_documents_every_flag_in_groups():
    done = run_cli_in_process(main, ["serve", "--help"])
    assert done.returncode == 0
    for group in ("model:", "server:", "limits:", "output:"):
        assert f"\n{group}" in done.stdout
    from tfpref.cli.serve import build_parser

    for action in build_parser()._actions:
        assert action.help and len(action.help) > 15, action.dest
    assert "tfpref serve" in done.stdout and "serve" in run_cli_in_process(main, ["--help"]).stdout
