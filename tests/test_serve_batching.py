"""The server's batching rule and JSON codec, on a stand-in model (no TensorFlow call): which
requests share a call, how their inputs are joined and the outputs split, the queue's limits."""
import asyncio
import threading

import numpy as np
import pytest
import tensorflow as tf

from tfpref.serve import codec
from tfpref.serve.batching import Batcher, finished
from tfpref.serve.errors import BadRequest, Overloaded, Retired

SCALARS = {"max_new_tokens": np.array(8, np.int32), "temperature": np.array(0.0, np.float32)}


def strings(*values):
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() for v in values]
    return array


class EchoModel:
    """Stands in for a signature: each row's output names its prompt (or conversation), and
    `token_logprobs` is as wide as the longest row in the call, like score's. Records each call;
    holds the first one until released, so that later requests queue up behind it."""

    def __init__(self, hold_first=False):
        self.calls, self.release = [], threading.Event()
        self.first = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, signature, inputs):
        self.first.set()
        self.release.wait(10)
        self.calls.append({name: value.copy() for name, value in inputs.items()})
        if signature == "chat":
            rows = [b"|".join(row) for row in inputs["roles"]]
        else:
            rows = list(inputs["prompts"])
        if any(row == b"bad" for row in rows):
            raise BadRequest("generate: a bad prompt")
        lengths = np.array([len(row) for row in rows], np.int32)
        token_logprobs = np.zeros((len(rows), lengths.max(initial=0)), np.float32)
        for i, length in enumerate(lengths):
            token_logprobs[i, :length] = -1.0
        completions = np.empty(len(rows), dtype=object)
        completions[:] = [row + b"!" for row in rows]
        return {"completions": completions, "num_tokens": lengths, "token_logprobs": token_logprobs}


def queued_behind_a_held_call(model, batcher, requests):
    """Submit a first request that the model holds, then `requests`; release; the futures of `requests`."""
    batcher.submit("generate", {"prompts": strings("first"), **SCALARS})
    assert model.first.wait(10)
    futures = [batcher.submit(signature, inputs) for signature, inputs in requests]
    model.release.set()
    return [future.result(10) for future in futures]


def test_requests_with_equal_scalars_share_one_call_and_get_their_own_rows():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=8, queue_size=16)
    results = queued_behind_a_held_call(model, batcher, [
        ("generate", {"prompts": strings("a"), **SCALARS}),
        ("generate", {"prompts": strings("bbb", "cc"), **SCALARS}),
        ("generate", {"prompts": strings("d"), **SCALARS, "max_new_tokens": np.array(4, np.int32)}),  # other value
        ("generate", {"prompts": strings("eeeee"), **SCALARS}),
    ])
    assert [len(call["prompts"]) for call in model.calls] == [1, 4, 1]  # held one; a, bbb cc, eeeee; d
    assert model.calls[1]["max_new_tokens"] == 8 and model.calls[2]["max_new_tokens"] == 4
    assert [r["completions"].tolist() for r in results] == [[b"a!"], [b"bbb!", b"cc!"], [b"d!"], [b"eeeee!"]]
    # token_logprobs is cut back to each request's own longest row, as it is alone.
    assert [r["token_logprobs"].shape for r in results] == [(1, 1), (2, 3), (1, 1), (1, 5)]
    assert (batcher.requests_served, batcher.calls) == (5, 3)
    batcher.close(wait=True)


def test_conversations_of_different_lengths_are_padded_with_the_empty_role():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=8, queue_size=16)
    one = np.array([[b"user"]], dtype=object)
    three = np.array([[b"system", b"user", b"assistant"], [b"user", b"", b""]], dtype=object)
    results = queued_behind_a_held_call(model, batcher, [
        ("chat", {"roles": one, "contents": one, **SCALARS}), ("chat", {"roles": three, "contents": three, **SCALARS})])
    assert model.calls[1]["roles"].tolist() == [[b"user", b"", b""], *three.tolist()]
    assert [r["completions"].tolist() for r in results] == [[b"user||!"], [b"system|user|assistant!", b"user||!"]]


def test_a_call_holds_at_most_max_rows_and_the_queue_order_is_kept():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=3, queue_size=16)
    queued_behind_a_held_call(model, batcher, [("generate", {"prompts": strings(*"ab"), **SCALARS}),
                                               ("generate", {"prompts": strings(*"cd"), **SCALARS}),
                                               ("generate", {"prompts": strings("e"), **SCALARS})])
    assert [call["prompts"].tolist() for call in model.calls[1:]] == [[b"a", b"b", b"e"], [b"c", b"d"]]


def test_one_bad_request_in_a_batch_fails_alone():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=8, queue_size=16)
    batcher.submit("generate", {"prompts": strings("first"), **SCALARS})
    assert model.first.wait(10)
    good = batcher.submit("generate", {"prompts": strings("fine"), **SCALARS})
    bad = batcher.submit("generate", {"prompts": strings("bad"), **SCALARS})
    model.release.set()
    assert good.result(10)["completions"].tolist() == [b"fine!"]
    with pytest.raises(BadRequest, match="a bad prompt"):
        bad.result(10)


def test_reproducible_sampling_runs_sampled_requests_alone():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=8, queue_size=16, reproducible_sampling=True)
    sampled = {**SCALARS, "temperature": np.array(0.7, np.float32)}
    queued_behind_a_held_call(model, batcher, [("generate", {"prompts": strings("a"), **sampled}),
                                               ("generate", {"prompts": strings("b"), **sampled}),
                                               ("generate", {"prompts": strings("c"), **SCALARS}),
                                               ("generate", {"prompts": strings("d"), **SCALARS})])
    assert [len(call["prompts"]) for call in model.calls] == [1, 1, 1, 2]


def test_a_full_queue_and_a_queue_timeout_are_overloaded():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=8, queue_size=2)
    batcher.submit("generate", {"prompts": strings("first"), **SCALARS})
    assert model.first.wait(10)
    waiting = [batcher.submit("generate", {"prompts": strings(p), **SCALARS}) for p in "ab"]
    with pytest.raises(Overloaded, match=r"queue of model test is full \(2 requests waiting\)"):
        batcher.submit("generate", {"prompts": strings("c"), **SCALARS})
    with pytest.raises(Overloaded, match=r"not served within the queue timeout \(0.1 s\)"):
        asyncio.run(finished(waiting[0], 0.1))
    assert waiting[0].cancelled()
    third = batcher.submit("generate", {"prompts": strings("c"), **SCALARS})  # the timed-out one's place
    model.release.set()
    assert asyncio.run(finished(third, 10))["completions"].tolist() == [b"c!"]
    assert [call["prompts"].tolist() for call in model.calls] == [[b"first"], [b"b", b"c"]]  # "a" never ran


def test_a_closed_batcher_serves_its_queue_then_refuses():
    model = EchoModel(hold_first=True)
    batcher = Batcher(model, "test", max_rows=8, queue_size=8)
    batcher.submit("generate", {"prompts": strings("first"), **SCALARS})
    assert model.first.wait(10)
    queued = batcher.submit("generate", {"prompts": strings("a"), **SCALARS})
    batcher.close()
    with pytest.raises(Retired):
        batcher.submit("generate", {"prompts": strings("b"), **SCALARS})
    model.release.set()
    assert queued.result(10)["completions"].tolist() == [b"a!"]
    batcher.close(wait=True)


GENERATE = {"prompts": tf.TensorSpec([None], tf.string), "max_new_tokens": tf.TensorSpec([], tf.int32),
            "temperature": tf.TensorSpec([], tf.float32)}
CHAT = {"roles": tf.TensorSpec([None, None], tf.string), "max_new_tokens": tf.TensorSpec([], tf.int32)}


def test_row_and_columnar_requests_give_the_same_inputs():
    columnar, row_format = codec.request_inputs(
        {"inputs": {"prompts": ["a", {"b64": "wqk="}], "max_new_tokens": 8, "temperature": 1}}, GENERATE, "generate")
    assert not row_format
    rows, row_format = codec.request_inputs(
        {"instances": [{"prompts": "a", "max_new_tokens": 8, "temperature": 1.0},
                       {"prompts": {"b64": "wqk="}, "max_new_tokens": 8.0, "temperature": 1}]}, GENERATE, "generate")
    assert row_format
    for inputs in (columnar, rows):
        assert inputs["prompts"].tolist() == [b"a", "©".encode()]
        assert inputs["max_new_tokens"].dtype == np.int32 and inputs["max_new_tokens"].ndim == 0
        assert inputs["temperature"].dtype == np.float32 and inputs["temperature"] == 1.0
    chat, _ = codec.request_inputs({"instances": [{"roles": ["user"], "max_new_tokens": 1},
                                                  {"roles": ["system", "user"], "max_new_tokens": 1}]}, CHAT, "chat")
    assert chat["roles"].tolist() == [[b"user", b""], [b"system", b"user"]]


@pytest.mark.parametrize("payload, message", [
    ({"inputs": {"prompts": ["a"], "max_new_tokens": True, "temperature": 1}}, "expected an integer"),
    ({"inputs": {"prompts": ["a"], "max_new_tokens": 2 ** 40, "temperature": 1}}, "out of range for int32"),
    ({"inputs": {"prompts": ["a"], "max_new_tokens": [8], "temperature": 1}}, "expected an integer, got a list"),
    ({"inputs": {"prompts": [["a"]], "max_new_tokens": 8, "temperature": 1}}, "expected a string, got a list"),
    ({"inputs": {"prompts": ["\ud800"], "max_new_tokens": 8, "temperature": 1}}, "not valid Unicode"),
    ({"inputs": {"prompts": ["a"], "max_new_tokens": 8, "temperature": "hot"}}, "expected a number"),
    ({"inputs": {"prompts": ["a"], "max_new_tokens": 8, "temperature": 10 ** 400}}, "out of range for float32"),
    ({"instances": []}, '"instances" must be a non-empty list'),
    ({"instances": ["a"]}, "each of \"instances\" must be an object of named inputs"),
    ({"instances": [{"prompts": "a", "max_new_tokens": 8}]}, "instance 0: missing input 'temperature'"),
])
def test_inputs_that_do_not_fit_the_signature_are_bad_requests(payload, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(")):
        codec.request_inputs(payload, GENERATE, "generate")


def test_outputs_are_json_in_both_formats():
    completions = np.empty(2, dtype=object)
    completions[:] = [b"ok", b"\xe2\x82"]  # a completion can stop inside a character
    outputs = {"completions": completions, "num_tokens": np.array([2, 2], np.int32),
               "logprob": np.array([-1.5, np.nan], np.float32)}
    columns = codec.response(outputs, row_format=False)["outputs"]
    assert columns["completions"] == ["ok", "\ufffd"] and columns["num_tokens"] == [2, 2]
    rows = codec.response(outputs, row_format=True)["predictions"]
    assert rows[0] == {"completions": "ok", "num_tokens": 2, "logprob": -1.5} and np.isnan(rows[1]["logprob"])
    assert codec.response({"reward": np.array([0.5], np.float32)}, row_format=True) == {"predictions": [0.5]}
