"""An int8 copy of a task model for serving, through Keras' own int8 layers.

`quantized_copy(model)` builds a copy of a task model, folds its LoRA adapters into their kernels,
and calls Keras' `layer.quantize("int8", config=...)` on every layer of the backbone that
implements it: `Dense` and `EinsumDense` (tfpref's transformer; keras-hub's GPT-2 and Qwen
blocks) get an int8 kernel with one float scale per output unit, `Embedding` and
`ReversibleEmbedding` an int8 table with one scale per token (the tied output projection reads the
same int8 table). Layers Keras has no int8 form of keep their float weights (the LSTM's cells,
the conv encoder's convolutions, layer norms, keras-hub's learned position table), and so do the
heads, on purpose: a reward, value or classifier head is a few thousand weights, and what it
computes is the served answer. `QuantizationReport` says how much of the model that left in float.
The model given is never changed.

Weight-only int8 (`activation_quantizer=None`: the int8 kernel is cast to float and scaled on the
fly inside each matmul) is the default rather than Keras' default of also quantizing each layer's
input to int8 per row (int8 x int8 matmuls into int32). Measured on the default transformer (0.83M
parameters, 400 MLE steps on the standard library; `benchmarks/export_quantized.py`, 512 held-out
windows of 256 bytes, 2 CPU cores, the exports loaded with `tf.saved_model.load`):

                        variables/   held-out      largest change of   score     generate
                                     perplexity    a token log-prob    (x float) (x float, per step)
    float32             3.33 MB      9.1211        -                   1         1
    int8 weight-only    0.89 MB      9.1202        0.14                1.09      0.99
    int8 activations    0.89 MB      9.1211        0.31                2.43      1.39

Both are 27% of the float size and within 0.01% of its perplexity, but quantizing activations makes
`score` 2.4 times and `generate` 1.4 times slower: at these widths TensorFlow's int8 x int8 matmul
on CPU and the per-row scaling of every input cost more than they save, where weight-only int8 costs
one cast per kernel; and it moves single tokens' log-probs twice as far. Neither is faster than
float32 here: the int8 export buys size (disk, download, memory), not speed.

Example:
    >>> quantized = quantized_copy(model)    # model: a run's task model, e.g. from tfpref.runs.load_run
    >>> print(quantized.report)
    int8: 821,248 of 833,040 parameters (98.6%); weights 0.87 MB, 26% of float32's 3.31 MB
"""
import dataclasses

import keras
import numpy as np

from tfpref.models.lora import fold_adapters

QUANTIZE_MODES = ("int8",)
# The export's choice: int8 weights, float activations (see the module docstring for why).
WEIGHT_ONLY_INT8 = keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)


@dataclasses.dataclass
class QuantizationReport:
    """What an int8 copy holds: parameters stored as int8 and as float, and its weights' bytes
    against the float model's. `float_matrices` names the [rows, columns] weights left in float,
    largest first (the LSTM's kernels, a position table, the heads)."""

    int8_parameters: int
    float_parameters: int
    bytes: int
    float_bytes: int
    float_matrices: list

    def __str__(self):
        total = self.int8_parameters + self.float_parameters
        line = (f"int8: {self.int8_parameters:,} of {total:,} parameters ({self.int8_parameters / total:.1%}); "
                f"weights {self.bytes / 1e6:.2f} MB, {self.bytes / self.float_bytes:.0%} of float32's "
                f"{self.float_bytes / 1e6:.2f} MB")
        if self.float_matrices:
            shown = ", ".join(f"{path} {list(shape)}" for path, shape in self.float_matrices[:3])
            more = len(self.float_matrices) - 3
            line += f"; left in float: {shown}" + (f" and {more} more" if more > 0 else "")
        return line


@dataclasses.dataclass
class QuantizedModel:
    """`model`: the int8 copy; `unread`: its folded LoRA adapters, which it no longer reads (leave
    them out of a SavedModel); `report`: a `QuantizationReport`."""

    model: keras.Model
    unread: list
    report: QuantizationReport


def quantized_copy(model, mode="int8", config=WEIGHT_ONLY_INT8):
    """An int8 copy of the task model `model` (a `QuantizedModel`); `model` itself is left as it was.

    Args:
        model: a task model (`CausalLM`, `RewardModel`, `Classifier`) with its weights.
        mode: "int8", the one mode (`QUANTIZE_MODES`).
        config: the `keras.quantizers.Int8QuantizationConfig` of the quantized layers; default
            `WEIGHT_ONLY_INT8`. `Int8QuantizationConfig()` (Keras' default) also quantizes each
            layer's inputs: benchmarks/export_quantized.py compares the two.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize: unknown mode {mode!r} (one of {', '.join(QUANTIZE_MODES)})")
    copy = _copy(model)
    unread = fold_adapters(copy)  # before quantizing: the int8 kernel is that of W + scale * A @ B
    unread_ids = {id(v) for v in unread}
    float_bytes = _bytes(v for v in copy.weights if id(v) not in unread_ids)
    left_float = []  # the weights of layers that have no int8 form, or are not the backbone's
    backbone_layers = {id(layer) for layer in copy.backbone._flatten_layers(include_self=False, recursive=True)}
    for layer in _weighted_leaves(copy):
        if not (id(layer) in backbone_layers and _quantized(layer, mode, config)):
            left_float += [v for v in layer.weights if len(v.shape) >= 2 and id(v) not in unread_ids]
    served = [v for v in copy.weights if id(v) not in unread_ids]
    int8 = [v for v in served if v.dtype == "int8"]
    floats = [v for v in served if "float" in v.dtype]  # not the int64 state of a dropout's seed
    matrices = sorted(left_float, key=lambda v: -np.prod(v.shape))
    report = QuantizationReport(int8_parameters=_count(int8), float_parameters=_count(floats),
                                bytes=_bytes(served), float_bytes=float_bytes,
                                float_matrices=[(v.path, tuple(v.shape)) for v in matrices])
    return QuantizedModel(copy, unread, report)


def _copy(model):
    """A new task model of `model`'s config holding its weights (the float model is never quantized)."""
    copy = type(model).from_config(model.get_config())
    if len(copy.weights) != len(model.weights):
        raise ValueError(f"quantize: a copy of {model.name} has {len(copy.weights)} weights, not "
                         f"{len(model.weights)}: its config does not rebuild it")
    for target, source in zip(copy.weights, model.weights):
        if tuple(target.shape) != tuple(source.shape) or target.dtype != source.dtype:
            raise ValueError(f"quantize: a copy of {model.name} differs at {source.path}: its config does not "
                             f"rebuild it")
        target.assign(source)
    return copy


def _quantized(layer, mode, config):
    """True once `layer` is quantized; False if Keras has no int8 form of it (its weights stay float)."""
    try:
        layer.quantize(mode, config=config)
    except NotImplementedError:  # Keras' answer for a layer without one (LSTMCell, LayerNormalization, ...)
        return False
    return True


def _weighted_leaves(model):
    """The layers of `model` without sub-layers that hold weights: the ones `quantize` converts."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if layer.weights and not list(layer._flatten_layers(include_self=False))]


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def _bytes(variables):
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables))


__all__ = ["quantized_copy", "QuantizedModel", "QuantizationReport", "QUANTIZE_MODES", "WEIGHT_ONLY_INT8"]
