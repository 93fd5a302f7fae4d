"""tfpref: pretraining and aligning language models with human preferences in TensorFlow/Keras."""
from tfpref.runtime import import_tensorflow_quietly

import_tensorflow_quietly()

__version__ = "0.1.0"
