"""Generation on keras-hub presets of each supported family (GPT-2: learned positions; Qwen: rotary):
the cached sampler against the uncached one, eager and under XLA, and rows independent of left padding."""
import numpy as np
import pytest

from keras_hub_presets import save_tiny_gpt2_preset, save_tiny_qwen_preset
from tfpref.models.keras_hub import KerasHubBackbone
from tfpref.models.logprobs import sequence_logprobs
from tfpref.models.sampling import Sampler, left_pad

NEW = 10
FAMILIES = {"gpt2": save_tiny_gpt2_preset, "qwen": save_tiny_qwen_preset}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def backbone(request, tmp_path_factory):
    preset = FAMILIES[request.param](tmp_path_factory.mktemp("preset") / request.param)
    return KerasHubBackbone(preset)


def prompts(vocab_size, lengths=(4, 9, 1, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab_size, n).astype(np.int32) for n in lengths]


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
