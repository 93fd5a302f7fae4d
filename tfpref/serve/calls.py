"""Calling a served model's signature from the server's own pages, through its batcher.

The pages (chat, labelling, A/B) ask the same models as the REST API, in the same queues, so their
requests are batched with the API's and bounded by the same limits. A request that reaches a
version just replaced is resubmitted to the new one (`Retired`).

Example:
    >>> outputs = await call(models["tfpref"], "generate", generate_inputs(["def f("], 32, 0.8), timeout_seconds=30)
"""
import concurrent.futures

import numpy as np

from tfpref.serve.batching import finished
from tfpref.serve.errors import Overloaded, Retired


def _submit(model, signature, inputs):
    while True:
        servable = model.current
        if signature not in servable.signatures:
            return None, servable
        try:
            return servable.batcher.submit(signature, inputs), servable
        except Retired:  # a newer version was swapped in just now
            continue


async def call(model, signature, inputs, timeout_seconds):
    """The outputs (NumPy) of `signature` of `model` (a VersionedModel) on `inputs`, awaited."""
    future, servable = _submit(model, signature, inputs)
    if future is None:
        raise KeyError(f"model {model.name} version {servable.version} has no signature {signature}")
    return await finished(future, timeout_seconds)


def call_blocking(model, signature, inputs, timeout_seconds):
    """`call` for code running in a worker thread (a blocking route)."""
    future, servable = _submit(model, signature, inputs)
    if future is None:
        raise KeyError(f"model {model.name} version {servable.version} has no signature {signature}")
    try:
        return future.result(timeout=timeout_seconds)
    except concurrent.futures.TimeoutError:
        if future.cancel():
            raise Overloaded(f"not served within the queue timeout ({timeout_seconds:g} s): the server is busy, "
                             f"try again later") from None
        return future.result()


def sampling_inputs(max_new_tokens, temperature, top_k=0, top_p=1.0, seed=0):
    """The scalar inputs every generating signature takes, typed as the export declares them."""
    return {"max_new_tokens": np.array(max_new_tokens, np.int32), "temperature": np.array(temperature, np.float32),
            "top_k": np.array(top_k, np.int32), "top_p": np.array(top_p, np.float32), "seed": np.array(seed, np.int32)}


def strings(values):
    """Texts (str or bytes) as the object array of bytes a string input takes; nested lists make a matrix."""
    def encode(value):
        return value if isinstance(value, bytes) else value.encode("utf-8")
    if values and isinstance(values[0], list):
        return np.array([[encode(v) for v in row] for row in values], dtype=object)
    return np.array([encode(v) for v in values], dtype=object)


def conversation_inputs(messages, reply_so_far=b""):
    """chat's roles and contents [1, M] for `messages` ({"role", "content"}), with the assistant's reply
    so far as a last message to continue (the export continues a final assistant message)."""
    roles = [m["role"] for m in messages]
    contents = [m["content"] for m in messages]
    if reply_so_far:
        roles.append("assistant")
        contents.append(reply_so_far)
    return {"roles": strings([roles]), "contents": strings([contents])}


__all__ = ["call", "call_blocking", "sampling_inputs", "strings", "conversation_inputs"]
