"""One loaded version of an exported model: its signatures, their inputs and outputs, TensorFlow
Serving's metadata of them, and the batcher that runs requests on it.

tfpref's exports have no "serving_default" signature: TensorFlow Serving's default name (what a
request without "signature_name" asks for) means the export's main signature here, `generate` for
a language model, `reward` for a reward model, `classify` for a classifier.
"""
import importlib.util
import os
import re

import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from tfpref.serve.batching import Batcher
from tfpref.serve.errors import BadRequest, NotFound

DEFAULT_SIGNATURE = "serving_default"
MAIN_SIGNATURES = ("generate", "reward", "classify")
# A failed tf.debugging assertion reads "... assertion failed: [message] [Condition ...]": the
# export's messages are written for people, the rest is the graph's.
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\] \[")


def _import_tensorflow_text():
    """Register TensorFlow Text's ops, which a keras-hub preset's tokenizer or a --tokenizer bpe|unigram
    vocabulary runs inside its export (an export of a byte-level run needs none)."""
    if importlib.util.find_spec("tensorflow_text") is not None:
        import tensorflow_text  # noqa: F401


def model_message(error):
    """The one line of a model's InvalidArgumentError meant for the client."""
    found = _ASSERTION.search(error.message)
    if found:
        # tf.debugging's asserts end the message with ".  " and escape quotes.
        return found.group(1).replace("\\'", "'").strip().rstrip(".")
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    return lines[0] if lines else "invalid argument"


def _tensor_info(info):
    """A TensorInfo as TensorFlow Serving's metadata shows it."""
    return {"dtype": types_pb2.DataType.Name(info.dtype),
            "tensor_shape": {"dim": [{"size": str(dim.size), "name": dim.name} for dim in info.tensor_shape.dim],
                             "unknown_rank": info.tensor_shape.unknown_rank},
            "name": info.name}


def read_signature_defs(path):
    """{signature: {inputs, outputs, method_name}} of the SavedModel at `path`, from its saved_model.pb."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return {name: {"inputs": {key: _tensor_info(info) for key, info in definition.inputs.items()},
                   "outputs": {key: _tensor_info(info) for key, info in definition.outputs.items()},
                   "method_name": definition.method_name}
            for name, definition in saved.meta_graphs[0].signature_def.items()
            if not name.startswith("__")}  # "__saved_model_init_op" is the loader's, not a signature to call


class Servable:
    """A model version loaded from `path`, ready to serve.

    Attributes:
        version: the version number (the export's step).
        inputs: {signature: {input name: tf.TensorSpec}}.
        signature_defs: TensorFlow Serving's JSON metadata of the signatures.
        batcher: the queue and worker thread its requests run through.
    """

    def __init__(self, name, path, version, settings):
        _import_tensorflow_text()
        self.name, self.path, self.version = name, path, version
        self.loaded = tf.saved_model.load(path)  # kept: the signatures are functions of this object
        self.signatures = dict(self.loaded.signatures)
        if not self.signatures:
            raise ValueError(f"{path}: the SavedModel has no signatures to serve")
        self.inputs = {name: dict(fn.structured_input_signature[1]) for name, fn in self.signatures.items()}
        self.signature_defs = read_signature_defs(path)
        self.batcher = Batcher(self._run, f"{name} version {version}", settings.max_batch, settings.queue_size,
                               settings.reproducible_sampling)

    @property
    def main_signature(self):
        return next((name for name in (DEFAULT_SIGNATURE, *MAIN_SIGNATURES) if name in self.signatures),
                    sorted(self.signatures)[0])

    def signature(self, name):
        """The signature a request's "signature_name" means (None and "serving_default": the main one)."""
        if name is None or (name == DEFAULT_SIGNATURE and name not in self.signatures):
            return self.main_signature
        if name not in self.signatures:
            raise NotFound(f"model {self.name} version {self.version} has no signature '{name}' "
                           f"(it has {', '.join(sorted(self.signatures))}; '{DEFAULT_SIGNATURE}' is "
                           f"{self.main_signature})")
        return name

    def _run(self, signature, inputs):
        """One call of `signature` on NumPy inputs; the batcher's worker thread runs it."""
        specs = self.inputs[signature]
        try:
            outputs = self.signatures[signature](**{name: tf.constant(value, specs[name].dtype)
                                                    for name, value in inputs.items()})
        except tf.errors.InvalidArgumentError as e:
            raise BadRequest(model_message(e)) from None
        return {name: value.numpy() for name, value in outputs.items()}

    def retire(self, wait=False):
        """Serve what is queued, then stop (a newer version has taken over, or the server stops)."""
        self.batcher.close(wait)
