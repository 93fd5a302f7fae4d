"""Rollouts of online RL: sample completions of prompts, score them, measure the KL to the reference.

A rollout turns prompts into the arrays a policy-gradient step trains on. Sampling uses the
compiled sampler (tokens + log-probs); each row is then laid out right-padded as
BOS prompt completion, and one compiled forward pass of the policy (and of the value head, for
PPO) and one of the frozen reference give the per-token log-probs the losses need. Rewards come
from a reward model or a scorer (`tfpref.rewards`), minus the missing-EOS penalty, optionally
whitened. Advantages are the objective's business (`PolicyGradientObjective.advantages`).
"""
from dataclasses import dataclass

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


def layout(prompt_ids, prompt_mask, tokens, token_mask, pad_id=0):
    """Right-padded rows BOS prompt completion from left-padded prompts and sampled tokens.

    Returns (token_ids [n, P + N], padding_mask, completion_mask), P the prompt width and N the
    sampled width; completion_mask marks the sampled tokens; `pad_id` fills the rest (masked).
    """
    n, width = prompt_ids.shape[0], prompt_ids.shape[1] + tokens.shape[1]
    token_ids = np.full([n, width], pad_id, np.int32)
    padding_mask = np.zeros([n, width], bool)
    completion_mask = np.zeros([n, width], bool)
    for row in range(n):
        prompt = prompt_ids[row][prompt_mask[row]]
        completion = tokens[row][token_mask[row]]
        end = len(prompt) + len(completion)
        token_ids[row, :end] = np.concatenate([prompt, completion])
        padding_mask[row, :end] = True
        completion_mask[row, len(prompt):end] = True
    return token_ids, padding_mask, completion_mask


class RolloutMaker:
    """Makes rollouts for `policy` against the frozen `reference`.

    Args:
        policy: the `CausalLM` being trained (its value head, if any, gives the values: PPO).
        reference: the frozen reference: a `CausalLM`, or the policy with its LoRA adapters off
            (`tfpref.rl.reference.AdaptersOff`), whose forward pass is traced separately here.
        reward: callable (prompts, completions, finished) -> rewards, see `tfpref.rewards`.
        align: the run's AlignConfig; jit_compile: compile sampling and the forward passes.
        tokenizer: the policy's tokenizer (default: bytes): prompts and completions are decoded with
            it; the policy's end token stops a completion, and its banned ids are never sampled.
    """

    def __init__(self, policy, reference, reward, align, jit_compile=True, tokenizer=None):
        self.reward, self.align = reward, align
        self.sampler = Sampler(policy, align.max_new_tokens, jit_compile=jit_compile)
        # Replies to chat prompts end their turn with <|end|> (tfpref.data.chat); built when needed.
        self.chat_sampler = None
        self._policy, self._jit_compile = policy, jit_compile
        self.tokenizer = tokenizer or ByteTokenizer()

        def forward(model, head, token_ids, padding_mask):
            hidden = model.hidden_states(token_ids[:, :-1], padding_mask[:, :-1])
            logprobs = token_logprobs_from_logits(model.logits_from_hidden(hidden), token_ids[:, 1:])
            values = head(hidden) if head is not None else tf.zeros_like(logprobs)
            return logprobs, values

        self._policy_pass = tf.function(lambda ids, mask: forward(policy, policy.value_head, ids, mask),
                                        jit_compile=jit_compile)
        self._reference_pass = tf.function(lambda ids, mask: forward(reference, None, ids, mask)[0],
                                           jit_compile=jit_compile)

    def _sampler(self, chat):
        if not chat:
            return self.sampler
        if self.chat_sampler is None:
            eos_id, banned = chat_generation(model_banned_ids(self._policy), self.tokenizer)
            self.chat_sampler = Sampler(self._policy, self.align.max_new_tokens, banned_ids=banned, eos_id=eos_id,
                                        jit_compile=self._jit_compile)
        return self.chat_sampler

    def make(self, prompt_ids, prompt_mask, seed):
        """A Rollout of one completion per row of the (left-padded) prompts.

        arrays: token_ids, padding_mask, completion_mask [n, T]; logprobs, reference_logprobs,
        values, kl (per-token estimates) [n, T - 1], all zero off the completion; reward (score
        minus penalty, whitened if asked), score, finished, length [n].
        """
        align = self.align
        # Left-padded: the last column ends each prompt, a chat prompt with <|assistant|>.
        chat = bool(np.any(prompt_ids[:, -1] == role_ids(self.tokenizer)["assistant"]))
        out = self._sampler(chat)(prompt_ids, prompt_mask, temperature=align.temperature, seed=seed)
        token_ids, padding_mask, completion_mask = layout(prompt_ids, prompt_mask, out["tokens"], out["mask"],
                                                          self.tokenizer.pad_id)
        logprobs, values = (x.numpy() for x in self._policy_pass(token_ids, padding_mask))
        reference_logprobs = self._reference_pass(token_ids, padding_mask).numpy()
        on = completion_mask[:, 1:]
        logprobs, reference_logprobs, values = (np.where(on, x, 0.0).astype(np.float32)
                                                for x in (logprobs, reference_logprobs, values))
        prompts = [messages_from_ids(row[mask], self.tokenizer) if chat else self.tokenizer.decode(row[mask])
                   for row, mask in zip(prompt_ids, prompt_mask)]
        completions = [self.tokenizer.decode(row[mask]) for row, mask in zip(out["tokens"], out["mask"])]
        finished = out["finished"]
        scores = np.asarray(self.reward(prompts, completions, finished), np.float32)
        reward = scores - align.missing_eos_penalty * (~finished)
        if align.whiten_rewards:
            reward = (reward - reward.mean()) / (reward.std() + 1e-8)
        kl = np.where(on, kl_estimates(logprobs, reference_logprobs, align.kl_estimator), 0.0)
        arrays = {"token_ids": token_ids, "padding_mask": padding_mask, "completion_mask": completion_mask,
                  "logprobs": logprobs, "reference_logprobs": reference_logprobs, "values": values,
                  "kl": kl.astype(np.float32), "reward": reward.astype(np.float32), "score": scores,
                  "finished": finished.astype(np.float32), "length": out["lengths"].astype(np.float32)}
        return Rollout(prompts, completions, arrays, scores)
