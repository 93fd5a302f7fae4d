"""keras-hub presets as tfpref backbones: the adapter against keras-hub's own forward pass, the
sampler's cached and uncached paths, left-padding invariance, serialization."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_hub_presets import save_tiny_gpt2_preset
from tfpref.models.keras_hub import KerasHubBackbone, load_causal_lm
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.sampling import Sampler, left_pad

NEW = 10


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_tiny_gpt2_preset(tmp_path_factory.mktemp("preset") / "tiny_gpt2")


@pytest.fixture(scope="module")
def backbone(preset):
    return KerasHubBackbone(preset)


def prompts(vocab_size, lengths=(4, 9, 1, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab_size, n).astype(np.int32) for n in lengths]


def test_forward_and_logprobs_equal_keras_hubs_own_forward_pass(preset, backbone):
    hub = load_causal_lm(preset)
    ids = np.random.default_rng(1).integers(0, backbone.vocab_size, (3, 12)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    expected = hub({"token_ids": ids, "padding_mask": mask}).numpy()
    np.testing.assert_allclose(backbone(ids).numpy(), expected, atol=1e-5)
    # sequence_logprobs: log-softmax of keras-hub's logits at each next token.
    logits = expected[:, :-1]
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    want = np.take_along_axis(log_softmax, ids[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(sequence_logprobs(backbone, ids, mask).numpy(), want, atol=1e-5)


def test_cached_generation_equals_uncached(backbone):
    ids, mask = left_pad(prompts(backbone.vocab_size))
    cached = Sampler(backbone, NEW, banned_ids=(), eos_id=None, jit_compile=False)(ids, mask, temperature=0.0)
    uncached = Sampler(backbone, NEW, banned_ids=(), eos_id=None, use_cache=False, jit_compile=False)(
        ids, mask, temperature=0.0)
    np.testing.assert_array_equal(cached["tokens"], uncached["tokens"])
    np.testing.assert_allclose(cached["logprobs"], uncached["logprobs"], atol=1e-4)
    np.testing.assert_allclose(cached["model_logprobs"], uncached["model_logprobs"], atol=1e-4)


def test_rows_do_not_depend_on_left_padding(backbone):
    rows = prompts(backbone.vocab_size)
    sampler = Sampler(backbone, NEW, banned_ids=(), eos_id=None, jit_compile=False)
    batched = sampler(*left_pad(rows), temperature=0.0)
    for r, row in enumerate(rows):
        alone = sampler(*left_pad([row]), temperature=0.0)
        np.testing.assert_array_equal(alone["tokens"][0], batched["tokens"][r])
        np.testing.assert_allclose(alone["logprobs"][0], batched["logprobs"][r], atol=1e-4)
        # The sampled continuation's log-probs equal a plain, unpadded forward pass over prompt + completion.
        sequence = np.concatenate([row, alone["tokens"][0]])[None]
        plain = sequence_logprobs(backbone, sequence, np.ones_like(sequence, bool)).numpy()[0, len(row) - 1:]
        np.testing.assert_allclose(plain, alone["model_logprobs"][0], atol=1e-4)


@pytest.mark.slow
def test_cached_generation_under_xla_equals_uncached(backbone):
    ids, mask = left_pad(prompts(backbone.vocab_size))
    compiled = Sampler(backbone, NEW, banned_ids=(), eos_id=None)(ids, mask, temperature=0.0)
    reference = Sampler(backbone, NEW, banned_ids=(), eos_id=None, use_cache=False, jit_compile=False)(
        ids, mask, temperature=0.0)
    np.testing.assert_array_equal(compiled["tokens"], reference["tokens"])
    np.testing.assert_allclose(compiled["logprobs"], reference["logprobs"], atol=1e-4)


def test_serialization_round_trip_records_the_preset(preset, backbone):
    config = backbone.get_config()
    assert config["preset"] == preset and config["lora_rank"] == 0
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(backbone))
    ids = tf.constant([[5, 6, 7]])
    np.testing.assert_allclose(restored(ids).numpy(), backbone(ids).numpy(), atol=1e-6)
