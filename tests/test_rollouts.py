"""Rollouts of online RL: the rows' layout, one compiled call for the policy's and the reference's passes,
and fixed shapes (nothing traced again from one rollout to the next)."""
import numpy as np
import tensorflow as tf

from tfpref.config import AlignConfig, ModelConfig
from tfpref.data.prompts import encode_prompts
from tfpref.models import CausalLM, build_model
from tfpref.models.logprobs import sequence_logprobs
from tfpref.rl.rollouts import RolloutMaker, layout

TINY = ModelConfig(d_model=32, num_layers=2, num_heads=2, ff_dim=64)


def language_model(seed, value_head=False):
    return CausalLM(build_model(TINY, seed=seed), value_head=value_head, name=f"causal_lm_{seed}")


def no_reward(prompts, completions, finished):
    return np.zeros(len(prompts), np.float32)


def test_layout_puts_each_rows_prompt_then_its_completion_first():
    rng = np.random.default_rng(0)
    rows, width, new = 8, 5, 4
    prompt_mask = np.arange(width)[None] >= rng.integers(0, width, rows)[:, None]  # left-padded, >= 1 token
    token_mask = np.arange(new)[None] < rng.integers(0, new + 1, rows)[:, None]  # 0 to `new` sampled tokens
    prompt_ids = rng.integers(16, 272, (rows, width)).astype(np.int32)
    tokens = rng.integers(16, 272, (rows, new)).astype(np.int32)
    token_ids, padding_mask, completion_mask = layout(prompt_ids, prompt_mask, tokens, token_mask, pad_id=0)
    for row in range(rows):  # the formula, one row at a time
        prompt, sampled = prompt_ids[row][prompt_mask[row]], tokens[row][token_mask[row]]
        end = len(prompt) + len(sampled)
        np.testing.assert_array_equal(token_ids[row, :end], np.concatenate([prompt, sampled]))
        assert (token_ids[row, end:] == 0).all()
        assert padding_mask[row].tolist() == [column < end for column in range(width + new)]
        assert completion_mask[row].tolist() == [len(prompt) <= column < end for column in range(width + new)]
    assert token_ids.dtype == np.int32 and token_mask.sum() > 0


def test_one_compiled_call_gives_what_separate_passes_give():
    """Policy log-probs and values, reference log-probs and the KL, from one XLA call, against each model's
    own pass (`sequence_logprobs`, uncompiled)."""
    policy, reference = language_model(0, value_head=True), language_model(1)
    align = AlignConfig(max_new_tokens=8, kl_estimator="k3")
    maker = RolloutMaker(policy, reference, no_reward, align, jit_compile=True)
    arrays = maker.make(*encode_prompts(["def f(x):\n", "x = 1", "import os\n", ""] * 2), seed=3).arrays
    token_ids, padding_mask = arrays["token_ids"], arrays["padding_mask"]
    on = arrays["completion_mask"][:, 1:]
    assert on.sum() == arrays["length"].sum() > 0
    for model, name in ((policy, "logprobs"), (reference, "reference_logprobs")):
        separate = tf.function(lambda ids, mask: sequence_logprobs(model, ids, mask))(token_ids, padding_mask)
        np.testing.assert_allclose(arrays[name], np.where(on, separate.numpy(), 0.0), atol=1e-5)
    values = policy.value_head(policy.hidden_states(token_ids[:, :-1], padding_mask[:, :-1])).numpy()
    np.testing.assert_allclose(arrays["values"], np.where(on, values, 0.0), atol=1e-5)
    d = arrays["reference_logprobs"] - arrays["logprobs"]
    np.testing.assert_allclose(arrays["kl"], np.where(on, np.expm1(d) - d, 0.0), atol=1e-5)
    assert np.abs(d).max() > 1e-2  # two different models: the comparison compares something


def test_rollouts_of_prompts_of_different_widths_share_one_trace():
    policy = language_model(0)
    align = AlignConfig(max_new_tokens=6)
    maker = RolloutMaker(policy, policy, no_reward, align, jit_compile=False, prompt_width=16)
    narrow, wide = encode_prompts(["x", "ab"] * 2), encode_prompts(["def f(value):\n", "y"] * 2)
    assert narrow[0].shape[1] < wide[0].shape[1] <= 16
    first, second = maker.make(*narrow, seed=1), maker.make(*wide, seed=2)
    assert first.arrays["token_ids"].shape == second.arrays["token_ids"].shape == (4, 16 + 6)
    assert maker.forward_passes.experimental_get_tracing_count() == 1
    assert maker.sampler.generate.experimental_get_tracing_count() == 1
    assert set(first.seconds) == {"sampling", "logprobs", "scoring"}
    # The padding changes nothing a row gets: the same prompts at their own width, the same seed.
    own = RolloutMaker(policy, policy, no_reward, align, jit_compile=False).make(*narrow, seed=1)
    assert own.arrays["token_ids"].shape == (4, narrow[0].shape[1] + 6)
    assert own.completions == first.completions and own.prompts == first.prompts == ["x", "ab"] * 2
    np.testing.assert_allclose(own.arrays["logprobs"].sum(axis=1), first.arrays["logprobs"].sum(axis=1), atol=1e-5)
