"""The sampler: cache correctness, padding invariance, log-probs, filtering, stopping, bans, seeds."""
import numpy as np
import pytest

from tfpref.config import ModelConfig
from tfpref.data.tokenizer import BOS_ID, CONTROL_IDS, NUM_SPECIAL, PAD_ID, VOCAB_SIZE
from tfpref.models import build_model
from tfpref.models.sampling import DEFAULT_BANNED_IDS, Sampler, filter_logits, left_pad

NEW = 12


def tiny_model(name):
    return build_model(ModelConfig(model=name, d_model=32, num_layers=2, num_heads=2, ff_dim=64), seed=3)


@pytest.fixture(scope="module", params=["transformer", "lstm"])
def model(request):
    return tiny_model(request.param)


def prompts(lengths=(4, 9, 1, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [np.concatenate([[BOS_ID], rng.integers(NUM_SPECIAL, VOCAB_SIZE, n - 1)]).astype(np.int32)
            for n in lengths]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def full_logits(model, prompt, generated):
    """Logits after every generated prefix, from one plain (unpadded, uncached) model call."""
    sequence = np.concatenate([prompt, generated])[None]
    logits = model(sequence).numpy()[0]
    return logits[len(prompt) - 1:len(prompt) - 1 + len(generated)]


def test_cached_and_uncached_greedy_decoding_agree(model):
    ids, mask = left_pad(prompts())
    cached = Sampler(model, NEW, eos_id=None)(ids, mask, temperature=0.0)
    uncached = Sampler(model, NEW, eos_id=None, use_cache=False, jit_compile=False)(
        ids, mask, temperature=0.0)
    np.testing.assert_array_equal(cached["tokens"], uncached["tokens"])
    np.testing.assert_allclose(cached["logprobs"], uncached["logprobs"], atol=1e-4)
    np.testing.assert_allclose(cached["model_logprobs"], uncached["model_logprobs"], atol=1e-4)
    assert cached["mask"].all() and (cached["lengths"] == NEW).all()


@pytest.mark.slow
def test_rows_do_not_depend_on_left_padding_or_batch_neighbours(model):
    rows = prompts()
    batched = Sampler(model, NEW, eos_id=None)(*left_pad(rows), temperature=0.0)
    unbatched = Sampler(model, NEW, eos_id=None, jit_compile=False)  # no XLA compile per shape
    for r, row in enumerate(rows):
        alone = unbatched(*left_pad([row]), temperature=0.0)
        np.testing.assert_array_equal(alone["tokens"][0], batched["tokens"][r])
        np.testing.assert_allclose(alone["logprobs"][0], batched["logprobs"][r], atol=1e-4)


@pytest.mark.slow
def test_logprobs_match_numpy_under_the_sampling_distribution(model):
    rows = prompts((5, 3))
    temperature, top_k = 0.7, 20
    out = Sampler(model, NEW, eos_id=None)(*left_pad(rows), temperature=temperature, top_k=top_k,
                                            seed=4)
    banned = np.zeros(VOCAB_SIZE, bool)
    banned[list(DEFAULT_BANNED_IDS)] = True
    for r, row in enumerate(rows):
        logits = full_logits(model, row, out["tokens"][r])
        scaled = np.where(banned, -np.inf, logits) / temperature
        kth = np.sort(scaled, -1)[:, -top_k][:, None]
        policy = log_softmax(np.where(scaled < kth, -np.inf, scaled))
        steps = np.arange(NEW)
        chosen = out["tokens"][r]
        assert np.isfinite(policy[steps, chosen]).all()  # every token came from the top-k
        np.testing.assert_allclose(out["logprobs"][r], policy[steps, chosen], atol=1e-4)
        np.testing.assert_allclose(out["model_logprobs"][r], log_softmax(logits)[steps, chosen], atol=1e-4)


def test_filter_logits_matches_numpy_top_k_then_top_p():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 40)).astype(np.float32) * 3
    for top_k, top_p in [(0, 1.0), (5, 1.0), (0, 0.6), (8, 0.5), (1, 0.9), (0, 0.0)]:
        expected = np.full_like(logits, -np.inf)
        for r, row in enumerate(logits):
            order = np.argsort(-row)
            keep = order[:top_k] if top_k > 0 else order
            probs = np.exp(row[keep] - row[keep].max())
            probs /= probs.sum()
            before = np.cumsum(probs) - probs
            keep = keep[before < top_p] if top_p > 0 else keep[:1]
            expected[r, keep] = row[keep]
        got = filter_logits(logits, top_k, top_p).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"top_k={top_k} top_p={top_p}")


@pytest.mark.slow
def test_top_k_one_is_greedy(model):
    ids, mask = left_pad(prompts())
    sampler = Sampler(model, NEW, eos_id=None)
    greedy = sampler(ids, mask, temperature=0.0)
    top1 = sampler(ids, mask, temperature=1.3, top_k=1, seed=9)
    np.testing.assert_array_equal(greedy["tokens"], top1["tokens"])
    np.testing.assert_allclose(top1["logprobs"], 0.0, atol=1e-6)  # a one-token distribution


@pytest.mark.slow
def test_a_row_stops_at_eos_and_is_padded_after(model):
    ids, mask = left_pad(prompts())
    free = Sampler(model, NEW, eos_id=None)(ids, mask, temperature=0.0)
    stop_token = int(free["tokens"][0, 3])  # treat a token row 0 emits at step 3 as its EOS
    out = Sampler(model, NEW, eos_id=stop_token)(ids, mask, temperature=0.0)
    for r in range(len(ids)):
        hits = np.flatnonzero(free["tokens"][r] == stop_token)
        length = hits[0] + 1 if len(hits) else NEW
        assert out["lengths"][r] == length
        assert out["finished"][r] == bool(len(hits))
        np.testing.assert_array_equal(out["tokens"][r, :length], free["tokens"][r, :length])
        assert (out["tokens"][r, length:] == PAD_ID).all()
        assert not out["mask"][r, length:].any() and out["mask"][r, :length].all()
        assert (out["logprobs"][r, length:] == 0).all()
    assert out["lengths"][0] <= 4 and out["finished"][0]


@pytest.mark.slow
def test_banned_ids_are_never_sampled(model):
    ids, mask = left_pad(prompts())
    greedy = Sampler(model, NEW, eos_id=None)(ids, mask, temperature=0.0)["tokens"]
    # Ban everything greedy chose, plus half the bytes; sample hot so low-probability ids come up.
    banned = set(DEFAULT_BANNED_IDS) | set(greedy.ravel().tolist()) | set(range(NUM_SPECIAL, 144))
    out = Sampler(model, NEW, banned_ids=sorted(banned), eos_id=None)(ids, mask, temperature=0.0)
    assert not np.isin(out["tokens"], sorted(banned)).any()
    hot = Sampler(model, 64, eos_id=None)(ids, mask, temperature=5.0, seed=2)["tokens"]
    assert not np.isin(hot, [PAD_ID, BOS_ID, *CONTROL_IDS]).any()


def test_same_seed_same_samples_other_seed_other_samples(model):
    ids, mask = left_pad(prompts())
    sampler = Sampler(model, NEW, eos_id=None)
    first = sampler(ids, mask, temperature=1.0, top_p=0.9, seed=11)
    again = sampler(ids, mask, temperature=1.0, top_p=0.9, seed=11)
    other = sampler(ids, mask, temperature=1.0, top_p=0.9, seed=12)
    np.testing.assert_array_equal(first["tokens"], again["tokens"])
    assert (first["tokens"] != other["tokens"]).any()


@pytest.mark.slow
def test_embedding_offset_conditions_every_position_cached_or_not(model):
    ids, mask = left_pad(prompts())
    offset = np.random.default_rng(1).normal(size=(len(ids), model.d_model)).astype(np.float32)
    cached = Sampler(model, NEW, eos_id=None)(ids, mask, temperature=0.0, embedding_offset=offset)
    uncached = Sampler(model, NEW, eos_id=None, use_cache=False, jit_compile=False)(
        ids, mask, temperature=0.0, embedding_offset=offset)
    np.testing.assert_array_equal(cached["tokens"], uncached["tokens"])
    np.testing.assert_allclose(cached["model_logprobs"], uncached["model_logprobs"], atol=1e-4)
    # The same as a plain model call with the offset at every position of the unpadded row.
    row = prompts()[0]
    sequence = np.concatenate([row, cached["tokens"][0]])[None]
    logits = model(sequence, embedding_offset=np.broadcast_to(offset[0], (1, sequence.shape[1], model.d_model)))
    expected = log_softmax(logits.numpy()[0, len(row) - 1:-1])
    np.testing.assert_allclose(cached["model_logprobs"][0],
                               np.take_along_axis(expected, cached["tokens"][0][:, None], -1)[:, 0], atol=1e-4)
    plain = Sampler(model, NEW, eos_id=None)(ids, mask, temperature=0.0)
    assert not np.allclose(plain["model_logprobs"], cached["model_logprobs"])
