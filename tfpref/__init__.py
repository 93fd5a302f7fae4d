"""tfpref: pretraining and aligning language models with human preferences in TensorFlow/Keras.

Importing the package imports no TensorFlow: the `tfpref` command decides first whether TensorFlow
may print its start-up noise (--verbose). A library user who wants a quiet console calls
`tfpref.runtime.import_tensorflow_quietly()` before importing the rest.
"""
__version__ = "0.1.0"
