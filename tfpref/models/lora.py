"""LoRA adapters as Keras applies them: folding them into the base kernels for an export.

Keras' `Dense` and `EinsumDense` (which keras-hub's `enable_lora` adapts) add
`lora_alpha / lora_rank * lora_kernel_a @ lora_kernel_b` to their kernel on every call while
`layer.lora_enabled` is true, a flag read in Python when a function is traced. A served model
need not pay that product on every call: `merged_adapters` folds it into the kernel once and
switches the flag off while the export is traced and saved, then puts the model back as it was.
`fold_adapters` does the same for good, on a copy that is quantized for an int8 export.

Example:
    >>> with merged_adapters(model.backbone):
    ...     tf.saved_model.save(module, path)      # kernels hold W + scale * A @ B; no adapter in the graph
"""
import contextlib

import keras


def adapted_layers(model):
    """The layers of `model` (any Keras layer) whose LoRA adapters are on."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if getattr(layer, "lora_enabled", False)]


def lora_scale(layer):
    return layer.lora_alpha / layer.lora_rank


def fold_adapters(model):
    """Fold every adapted layer's adapters into its kernel (W + scale * A @ B) and switch them off,
    for good: for a copy of a model that is exported and thrown away (the int8 export quantizes the
    folded kernels). Returns the adapter variables, which nothing reads any more."""
    layers = adapted_layers(model)
    for layer in layers:
        delta = lora_scale(layer) * keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)
        layer._kernel.assign(layer._kernel + keras.ops.cast(delta, layer._kernel.dtype))
        layer.lora_enabled = False
    return [v for layer in layers for v in (layer.lora_kernel_a, layer.lora_kernel_b)]


@contextlib.contextmanager
def merged_adapters(model):
    """Within: every adapted layer of `model` computes with kernel W + scale * A @ B and no adapter
    (the same function, one matmul fewer); after: W and the adapters exactly as before, even if
    the body raised. Yields the adapter variables, which the merged graph no longer reads."""
    layers = adapted_layers(model)
    originals = [layer._kernel.numpy() for layer in layers]  # the exact base kernels, to put back
    try:
        yield fold_adapters(model)
    finally:
        for layer, kernel in zip(layers, originals):
            layer._kernel.assign(kernel)
            layer.lora_enabled = True
