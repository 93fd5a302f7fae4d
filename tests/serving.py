"""Helpers of the server tests: tiny exports, a server on a free port in a background thread, and
direct calls of an export's signatures (what the server's answers are compared with)."""
import functools
import threading
import time

import numpy as np
import tensorflow as tf
import uvicorn

from tfpref.config import ModelConfig, RunConfig
from tfpref.models import CausalLM, build_model, build_task_model
from tfpref.serve.app import build_app
from tfpref.training.export import export_model

GREEDY = {"max_new_tokens": 8, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}


def tiny_language_model():
    return CausalLM(build_model(ModelConfig(model="transformer", d_model=32, num_layers=2, num_heads=2, ff_dim=64),
                                seed=5))


def conditioned_language_model(conditioning):
    """A tiny `CausalLM` conditioned by control tokens or a preference vector. Untrained, the choice
    barely moves its greedy text: a large <|misaligned|> embedding (its text: mostly that token, which
    decodes to nothing) or a larger preference projection make an aligned and a misaligned answer to
    one prompt differ, so one served as the other would show. NumPy's seeded draws: the same in every
    process."""
    model = CausalLM(build_model(ModelConfig(model="transformer", d_model=32, num_layers=2, num_heads=2, ff_dim=64),
                                 seed=5), conditioning=conditioning)
    draw = np.random.RandomState(1).normal
    if conditioning == "control_tokens":
        table = model.backbone.embedding.embeddings
        table.assign(tf.tensor_scatter_nd_update(table, [[model.prompt_prefix(False)[0]]],
                                                 draw(0.0, 1.0, [1, table.shape[1]]).astype(np.float32)))
    else:
        kernel = model.preference_projection.kernel
        kernel.assign(draw(0.0, 0.1, kernel.shape).astype(np.float32))
    return model


def tiny_reward_model(directory):
    config = RunConfig(model_dir=str(directory))
    config.model = ModelConfig(d_model=32, num_layers=2, num_heads=2, ff_dim=64)
    config.data.seq_len, config.train.objective = 12, "reward_model"
    model = build_task_model(config, seed=3)
    score = model.reward_head.score.projection
    score.kernel.assign(tf.random.normal(score.kernel.shape, seed=2))  # zero at initialisation: all rewards equal
    return model


def two_language_model_exports(root):
    """Exports (without XLA: quick to write and to call) of two different tiny language models, as
    {"a": path, "b": path, "root": root}: a chat model and the two arms of an A/B test."""
    other = CausalLM(build_model(ModelConfig(model="transformer", d_model=32, num_layers=2, num_heads=2, ff_dim=64),
                                 seed=6))
    return {"a": export_model(tiny_language_model(), str(root / "a"), 1, jit_compile=False),
            "b": export_model(other, str(root / "b"), 1, jit_compile=False), "root": root}


class RunningServer:
    """`build_app(settings)` served by uvicorn on a free 127.0.0.1 port in a background thread, as
    `tfpref serve` serves it (same app; the CLI's own process is tested in test_serve_rest.py)."""

    def __init__(self, settings):
        self.app = build_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def batcher(self, name="tfpref"):
        return self.app.state.models[name].current.batcher

    def stop(self):
        self.server.should_exit = True
        self.thread.join(60)


def call_signature(path, signature, **inputs):
    """The export's own answer: `signature` called in this process, strings decoded as the server does."""
    function = _load(str(path)).signatures[signature]
    specs = function.structured_input_signature[1]
    outputs = function(**{name: tf.constant(value, specs[name].dtype) for name, value in inputs.items()})
    return {name: _decoded(value.numpy()) for name, value in outputs.items()}


@functools.lru_cache(maxsize=None)
def _load(path):
    return tf.saved_model.load(path)


def _decoded(array):
    if array.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()
