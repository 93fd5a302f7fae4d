"""Process-wide set-up that has to happen before TensorFlow is first imported.

The full `tensorflow` wheel prints CUDA probing messages on CPU-only machines from C++ code that
runs before absl logging is initialised, so `TF_CPP_MIN_LOG_LEVEL` alone does not hide them. We
point file descriptor 2 at /dev/null for the duration of the import and of the first device query,
then restore it; Python exceptions still propagate because they are raised after the restore.
Set TFPREF_VERBOSE=1 (train.py --verbose does) to see everything.
"""
import contextlib
import logging
import os
import sys
import warnings

_done = False


def verbose_requested():
    return os.environ.get("TFPREF_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    """Import TensorFlow, Keras and keras-hub once, without console noise unless verbose."""
    global _done
    if _done:
        return
    _done = True
    if verbose_requested():
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_to_devnull():
        import tensorflow as tf
        import keras  # noqa: F401
        tf.config.list_physical_devices()  # the CUDA probe logs here on first call
    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")
