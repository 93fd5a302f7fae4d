"""Test-wide settings: scores are cached in a temporary directory, never in the user's home."""
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def score_cache_dir(tmp_path_factory):
    previous = os.environ.get("TFPREF_CACHE_DIR")
    os.environ["TFPREF_CACHE_DIR"] = str(tmp_path_factory.mktemp("score_cache"))
    yield os.environ["TFPREF_CACHE_DIR"]
    if previous is None:
        os.environ.pop("TFPREF_CACHE_DIR")
    else:
        os.environ["TFPREF_CACHE_DIR"] = previous


@pytest.fixture
def restore_precision_policy():
    """Put Keras' global float32 policy back after a test that trains in mixed precision."""
    yield
    import keras  # late: the cache fixture above must not load Keras for every test run

    keras.mixed_precision.set_global_policy("float32")
