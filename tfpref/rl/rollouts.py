"""Rollouts of online RL: sample completions of prompts, score them, measure the KL to the reference.

A rollout turns prompts into the arrays a policy-gradient step trains on. Sampling uses the
compiled sampler (tokens + log-probs); each row is then laid out right-padded as
BOS prompt completion, and one compiled call runs every forward pass the losses need: the policy's
(with the value head, for PPO) and the frozen reference's log-probs, masked to the completion, and
the per-token KL estimates. Rewards come from a reward model or a scorer (`tfpref.rewards`), minus
the missing-EOS penalty, optionally whitened. Advantages are the objective's business
(`PolicyGradientObjective.advantages`).

Shapes are fixed so that nothing is traced or compiled again from one rollout to the next: prompts
narrower than the maker's `prompt_width` are left-padded to it (the sampler's output for a row does
not depend on its left padding), so every rollout of n rows is [n, prompt_width + max_new_tokens].
"""
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfpref.data.chat import chat_generation, messages_from_ids, role_ids
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.models.logprobs import token_logprobs_from_logits
from tfpref.models.sampling import Sampler, model_banned_ids
from tfpref.rl.kl import kl_estimates


@dataclass
class Rollout:
    prompts: list               # prompt texts, one per row (repeated samples_per_prompt times)
    completions: list           # completion texts
    arrays: dict                # name -> np.ndarray [rows, ...], see `RolloutMaker.make`
    scores: np.ndarray          # [rows] reward before penalties, whitening and KL
    # Wall seconds of its parts: sampling, logprobs (the compiled forward passes), scoring (decoding and
    # the reward): where an RL step's time goes besides the optimizer steps.
    seconds: dict = field(default_factory=dict)


def layout(prompt_ids, prompt_mask, tokens, token_mask, pad_id=0):
    """Right-padded rows BOS prompt completion from left-padded prompts and sampled tokens.

    Returns (token_ids [n, P + N], padding_mask, completion_mask), P the prompt width and N the
    sampled width; completion_mask marks the sampled tokens; `pad_id` fills the rest (masked).
    """
    ids = np.concatenate([prompt_ids, tokens], axis=1)
    real = np.concatenate([prompt_mask, token_mask], axis=1).astype(bool)
    sampled = np.concatenate([np.zeros_like(real[:, :prompt_ids.shape[1]]), real[:, prompt_ids.shape[1]:]], axis=1)
    # A stable sort on "not real" moves each row's real tokens to its start, in their order.
    order = np.argsort(~real, axis=1, kind="stable")
    padding_mask = np.take_along_axis(real, order, axis=1)
    token_ids = np.where(padding_mask, np.take_along_axis(ids, order, axis=1), pad_id).astype(np.int32)
    return token_ids, padding_mask, np.take_along_axis(sampled, order, axis=1)


class RolloutMaker:
    """Makes rollouts for `policy` against the frozen `reference`.

    Args:
        policy: the `CausalLM` being trained (its value head, if any, gives the values: PPO).
        reference: the frozen reference: a `CausalLM`, or the policy with its LoRA adapters off
            (`tfpref.rl.reference.AdaptersOff`), traced here beside the policy in one function.
        reward: callable (prompts, completions, finished) -> rewards, see `tfpref.rewards`.
        align: the run's AlignConfig; jit_compile: compile sampling and the forward passes.
        tokenizer: the policy's tokenizer (default: bytes): prompts and completions are decoded with
            it; the policy's end token stops a completion, and its banned ids are never sampled.
        prompt_width: narrower prompts are left-padded to this many columns, so rollouts of prompts
            of any width up to it share one traced and compiled sampler and forward pass (wider
            prompts keep their own width, and cost a new trace).

    Example:
        >>> maker = RolloutMaker(policy, reference, reward_function(scorer="pep8"), AlignConfig())
        >>> rollout = maker.make(*encode_prompts(["def f(x):\\n"] * 4), seed=0)
        >>> rollout.arrays["kl"].sum(axis=1), rollout.completions
    """

    def __init__(self, policy, reference, reward, align, jit_compile=True, tokenizer=None, prompt_width=0):
        self.reward, self.align, self.prompt_width = reward, align, prompt_width
        self.sampler = Sampler(policy, align.max_new_tokens, jit_compile=jit_compile)
        # Replies to chat prompts end their turn with <|end|> (tfpref.data.chat); built when needed.
        self.chat_sampler = None
        self._policy, self._reference, self._jit_compile = policy, reference, jit_compile
        self.tokenizer = tokenizer or ByteTokenizer()
        # Both models' passes in one call: one dispatch and one XLA program, whose two halves share the
        # inputs and the masking. Its tracing count is the number of shapes it was traced for.
        self.forward_passes = tf.function(self._forward_passes, jit_compile=jit_compile)

    def _forward_passes(self, token_ids, padding_mask, completion_mask):
        """{logprobs, reference_logprobs, values, kl} [n, T - 1], zero off the completion."""
        inputs, context, targets = token_ids[:, :-1], padding_mask[:, :-1], token_ids[:, 1:]
        hidden = self._policy.hidden_states(inputs, context)
        logprobs = token_logprobs_from_logits(self._policy.logits_from_hidden(hidden), targets)
        head = self._policy.value_head
        values = tf.zeros_like(logprobs) if head is None else tf.cast(head(hidden), tf.float32)
        reference = self._reference.hidden_states(inputs, context)
        reference_logprobs = token_logprobs_from_logits(self._reference.logits_from_hidden(reference), targets)
        on, zero = completion_mask[:, 1:], tf.zeros_like(logprobs)
        logprobs, reference_logprobs, values = (tf.where(on, x, zero) for x in (logprobs, reference_logprobs, values))
        kl = tf.where(on, kl_estimates(logprobs, reference_logprobs, self.align.kl_estimator), zero)
        return {"logprobs": logprobs, "reference_logprobs": reference_logprobs, "values": values, "kl": kl}

    def _sampler(self, chat):
        if not chat:
            return self.sampler
        if self.chat_sampler is None:
            eos_id, banned = chat_generation(model_banned_ids(self._policy), self.tokenizer)
            self.chat_sampler = Sampler(self._policy, self.align.max_new_tokens, banned_ids=banned, eos_id=eos_id,
                                        jit_compile=self._jit_compile)
        return self.chat_sampler

    def _widen(self, prompt_ids, prompt_mask):
        """The prompts left-padded to `prompt_width` columns (unchanged if already as wide)."""
        extra = self.prompt_width - prompt_ids.shape[1]
        if extra <= 0:
            return prompt_ids, prompt_mask
        return (np.pad(prompt_ids, [(0, 0), (extra, 0)], constant_values=self.tokenizer.pad_id),
                np.pad(prompt_mask, [(0, 0), (extra, 0)]))

    def make(self, prompt_ids, prompt_mask, seed):
        """A Rollout of one completion per row of the (left-padded) prompts.

        arrays: token_ids, padding_mask, completion_mask [n, T]; logprobs, reference_logprobs,
        values, kl (per-token estimates) [n, T - 1], all zero off the completion; reward (score
        minus penalty, whitened if asked), score, finished, length [n]. T is the prompts' width
        (at least `prompt_width`) plus max_new_tokens.
        """
        align = self.align
        began = time.perf_counter()
        prompt_ids, prompt_mask = self._widen(prompt_ids, prompt_mask)
        # Left-padded: the last column ends each prompt, a chat prompt with <|assistant|>.
        chat = bool(np.any(prompt_ids[:, -1] == role_ids(self.tokenizer)["assistant"]))
        out = self._sampler(chat)(prompt_ids, prompt_mask, temperature=align.temperature, seed=seed)
        sampled = time.perf_counter()
        token_ids, padding_mask, completion_mask = layout(prompt_ids, prompt_mask, out["tokens"], out["mask"],
                                                          self.tokenizer.pad_id)
        arrays = {name: value.numpy() for name, value in
                  self.forward_passes(token_ids, padding_mask, completion_mask).items()}
        passed = time.perf_counter()
        prompts = [messages_from_ids(row[mask], self.tokenizer) if chat else self.tokenizer.decode(row[mask])
                   for row, mask in zip(prompt_ids, prompt_mask)]
        completions = [self.tokenizer.decode(row[mask]) for row, mask in zip(out["tokens"], out["mask"])]
        finished = out["finished"]
        scores = np.asarray(self.reward(prompts, completions, finished), np.float32)
        reward = scores - align.missing_eos_penalty * (~finished)
        if align.whiten_rewards:
            reward = (reward - reward.mean()) / (reward.std() + 1e-8)
        arrays.update(token_ids=token_ids, padding_mask=padding_mask, completion_mask=completion_mask,
                      reward=reward.astype(np.float32), score=scores, finished=finished.astype(np.float32),
                      length=out["lengths"].astype(np.float32))
        seconds = {"sampling": sampled - began, "logprobs": passed - sampled, "scoring": time.perf_counter() - passed}
        return Rollout(prompts, completions, arrays, scores, seconds)
