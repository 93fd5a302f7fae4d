"""Batching: concurrent requests to one model run as one call of its signature.

The rows of one model call share its fixed costs (dispatch, the decoding loop's steps, reading the
weights at every step): on CPU, 8 rows cost a few times 1 row, not 8 times. So requests that arrive
together are served together. Each loaded model
version has one `Batcher`: a bounded queue and one worker thread, which also keeps TensorFlow calls
on a model in one thread.

The rule: the worker takes the oldest waiting request and, in order, every later one that can share
its call, up to `max_rows` rows in all. Two requests share a call when they are for the same
signature and their scalar inputs are equal (max_new_tokens, temperature, top_k, top_p and seed are
one value per call, not per row), and every input of each has the same number of rows. Their inputs
are concatenated along the batch axis; string matrices (chat's roles and contents, [rows,
messages]) are first padded with "" to the longest conversation (role "" is the export's padding
role). The call's outputs are split back by rows. Requests that cannot share a call keep their
places in the queue. The worker never waits for a batch to fill: requests queue up while it runs
the previous call, so an idle server answers at once and a busy one batches.

Batching changes no result of a greedy request (temperature 0): the export masks padding rows and
columns, and a row's tokens do not depend on the others. A sampled request draws its noise by its
row in the call, so batched with others it gets other (equally likely) samples than alone;
`reproducible_sampling` runs sampled requests alone. If a batched call fails on bad input (the
model's INVALID_ARGUMENT: an empty text, a prompt too long), its requests are run one by one, so
only the bad one gets the error.

Example:
    >>> batcher = Batcher(run, "tfpref", max_rows=64, queue_size=256)
    >>> future = batcher.submit("generate", inputs)   # a concurrent.futures.Future of the outputs
    >>> outputs = await finished(future, timeout_seconds=30)
"""
import asyncio
import collections
import concurrent.futures
import threading

import numpy as np

from tfpref.serve.errors import BadRequest, Overloaded, Retired

# Outputs whose axis 1 is as wide as the longest row of the call, the row's own width being another
# output: score's token_logprobs [rows, most num_tokens in the call] (zeros past a text's end). A
# request's share is cut back to the width it has alone.
WIDTH_FROM = {"token_logprobs": "num_tokens"}


def is_string_matrix(value):
    return value.ndim == 2 and value.dtype == object


class Request:
    """One request waiting in a batcher: its inputs (NumPy arrays, strings as object arrays of
    bytes), what it must share with another to run in one call (`key`, None: runs alone), and
    the future its outputs go to."""

    def __init__(self, signature, inputs, reproducible_sampling):
        self.signature, self.inputs = signature, inputs
        self.future = concurrent.futures.Future()
        row_counts = {value.shape[0] for value in inputs.values() if value.ndim}
        self.rows = next(iter(row_counts)) if len(row_counts) == 1 else 0
        sampled = "temperature" in inputs and inputs["temperature"].ndim == 0 and inputs["temperature"] > 0
        if self.rows == 0 or (reproducible_sampling and sampled):
            # Inputs that disagree in rows (the model names the error), no rows, or sampling asked to
            # be reproducible: alone.
            self.key = None
        else:
            self.key = (signature, tuple(sorted(_part_of_key(name, value) for name, value in inputs.items())))


def _part_of_key(name, value):
    """What `value` must agree on with the same input of another request to share a call: a scalar
    its value, a tensor its dtype and its shape past the rows (past the messages, which are padded,
    for a string matrix)."""
    if value.ndim == 0:
        return name, value.item()
    return name, value.dtype.str, value.shape[2 if is_string_matrix(value) else 1:]


def combine(requests):
    """The inputs of one call serving every request of `requests` (which share a key)."""
    if len(requests) == 1:
        return requests[0].inputs
    combined = {}
    for name, value in requests[0].inputs.items():
        if value.ndim == 0:
            combined[name] = value
            continue
        parts = [request.inputs[name] for request in requests]
        if is_string_matrix(value):
            width = max(part.shape[1] for part in parts)
            parts = [np.pad(part, ((0, 0), (0, width - part.shape[1])), constant_values=b"") for part in parts]
        combined[name] = np.concatenate(parts)
    return combined


def split(outputs, requests):
    """Each request's share of one call's outputs, as it would get them alone."""
    if len(requests) == 1:
        return [outputs]
    shares, start = [], 0
    for request in requests:
        share = {name: value[start:start + request.rows] for name, value in outputs.items()}
        for name, source in WIDTH_FROM.items():
            if name in share and source in share and share[name].ndim == 2:
                share[name] = share[name][:, :int(share[source].max(initial=0))]
        shares.append(share)
        start += request.rows
    return shares


class Batcher:
    """A model version's queue of requests and the one thread that runs them in batches.

    Args:
        run: `run(signature, inputs) -> outputs`, dicts of NumPy arrays; raises BadRequest for bad input.
        name: the model's name and version, for the thread's name and the log.
        max_rows: the most rows one call runs (a longer single request still runs, alone).
        queue_size: the most requests waiting; `submit` raises Overloaded beyond it.
        reproducible_sampling: run sampled requests (temperature > 0) alone.
    """

    def __init__(self, run, name, max_rows, queue_size, reproducible_sampling=False):
        self._run, self.name = run, name
        self.max_rows, self.queue_size, self.reproducible_sampling = max_rows, queue_size, reproducible_sampling
        self._pending = collections.deque()
        self._changed = threading.Condition()
        self._closed = False
        # Served requests and the model calls that served them, since this version was loaded: their
        # ratio is how much batching is happening (/healthz shows both).
        self.requests_served, self.calls = 0, 0
        self._thread = threading.Thread(target=self._work, name=f"batcher {name}", daemon=True)
        self._thread.start()

    def submit(self, signature, inputs):
        """Queue a request; returns the concurrent.futures.Future of its outputs. Raises Overloaded
        when the queue is full, Retired once the batcher is closed (a newer version took over)."""
        request = Request(signature, inputs, self.reproducible_sampling)
        with self._changed:
            if self._closed:
                raise Retired(self.name)
            if len(self._pending) >= self.queue_size:  # requests that timed out may still hold places
                self._pending = collections.deque(r for r in self._pending if not r.future.cancelled())
            if len(self._pending) >= self.queue_size:
                raise Overloaded(f"the queue of model {self.name} is full ({self.queue_size} requests waiting): "
                                 f"try again later")
            self._pending.append(request)
            self._changed.notify()
        return request.future

    def close(self, wait=False):
        """Take no more requests; those already queued are still served, then the thread ends."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if wait:
            self._thread.join()

    def _work(self):
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._changed.wait()
                if not self._pending:
                    return
                group = self._take_group()
            if group:
                self._serve(group)

    def _take_group(self):
        """The oldest live request and every later one that can share its call; the others keep
        their order. A request cancelled while waiting (its queue timeout passed) is dropped."""
        group, rows, left = [], 0, collections.deque()
        for request in self._pending:
            fits = not group or (request.key is not None and request.key == group[0].key
                                 and rows + request.rows <= self.max_rows)
            if not fits:
                left.append(request)
            elif request.future.set_running_or_notify_cancel():
                group.append(request)
                rows += request.rows
        self._pending = left
        return group

    def _serve(self, group):
        try:
            outputs = self._run(group[0].signature, combine(group))
            shares = split(outputs, group)
        except BadRequest as e:
            if len(group) == 1:
                group[0].future.set_exception(e)
                return
            for request in group:  # whose input is bad: only that request gets the error
                self._serve([request])
            return
        except Exception as e:  # noqa: BLE001 - handed to every waiting request, whose handler reports it
            for request in group:
                request.future.set_exception(e)
            return
        self.calls += 1
        self.requests_served += len(group)
        for request, share in zip(group, shares):
            request.future.set_result(share)


async def finished(future, timeout_seconds):
    """The outputs of a submitted request, awaited without blocking the event loop. A request not
    started within `timeout_seconds` leaves the queue and raises Overloaded; one already running
    is waited for to the end."""
    waiting = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(asyncio.shield(waiting), timeout_seconds)
    except asyncio.TimeoutError:
        if future.cancel():
            raise Overloaded(f"not served within the queue timeout ({timeout_seconds:g} s): the server is busy, "
                             f"try again later") from None
        return await waiting
