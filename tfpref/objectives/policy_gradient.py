"""Online policy-gradient fine-tuning: REINFORCE, RLOO and PPO with a KL penalty to the reference.

Every step's data is made on the spot: a rollout samples completions of training prompts with the
current policy (`tfpref.rl.rollouts`), scores them, and estimates the per-token KL to the
frozen --init_from policy (with --lora_rank on a preset, the policy with its new adapters off: no
second copy of the model; see `tfpref.rl.reference`). The KL enters the reward,
R' = R - kl_coef * KL (per token for PPO):
  * reinforce: loss_i = -(R'_i - b) sum_t log pi(a_t|s_t); b = 0 or a moving average of R'.
  * rloo: b = the mean R' of the prompt's other --samples_per_prompt - 1 completions
    (Ahmadian et al. 2024).
  * ppo: the policy's value head (a `CausalLM` with value_head=True); per-token rewards
    -kl_coef kl_t, plus R at the last token; GAE advantages (whitened over the rollout); the clipped surrogate
    max(-A r, -A clip(r, 1 - e, 1 + e)), r = pi / pi_old, averaged over the completion's tokens,
    plus value_coef times the clipped value loss; --ppo_epochs passes of --ppo_minibatches
    optimizer steps over each rollout.
A train step is one optimizer step: REINFORCE and RLOO make one rollout of --batch_size
completions per step; PPO one of batch_size x ppo_minibatches per ppo_epochs x ppo_minibatches steps.
"""
import numpy as np
import tensorflow as tf

from tfpref.data.chat import render_text
from tfpref.data.pipeline import ArrayData, batch_order
from tfpref.data.prompts import policy_prompts, prompt_arrays
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError
from tfpref.models import max_positions
from tfpref.models.logprobs import token_logprobs_from_logits
from tfpref.objectives.base import BatchPlan, Objective, ObjectiveOutput
from tfpref.rewards import reward_function
from tfpref.rl.kl import KLController
from tfpref.rl.reference import AdaptersOff, policy_reference
from tfpref.rl.rollouts import RolloutMaker

MOVING_AVERAGE_DECAY = 0.9


# ---- the formulas (golden-tested against NumPy) ----------------------------------------------

def reinforce_losses(logprobs, advantages, mask):
    """-sum_t A_t log pi_t over each row's completion tokens."""
    return -tf.reduce_sum(advantages * logprobs * mask, axis=-1)


def ppo_policy_losses(logprobs, old_logprobs, advantages, mask, clip_ratio):
    """(clipped surrogate loss per row, averaged over its tokens; clipped-token indicator)."""
    ratio = tf.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    per_token = tf.maximum(unclipped, clipped)
    was_clipped = tf.cast(clipped > unclipped, per_token.dtype) * mask
    return _token_mean(per_token, mask), was_clipped


def value_losses(values, old_values, returns, mask, clip_range):
    """0.5 max((V - G)^2, (V_clipped - G)^2) per row, averaged over its tokens."""
    clipped = old_values + tf.clip_by_value(values - old_values, -clip_range, clip_range)
    per_token = 0.5 * tf.maximum(tf.square(values - returns), tf.square(clipped - returns))
    return _token_mean(per_token, mask)


def _token_mean(per_token, mask):
    return tf.reduce_sum(per_token * mask, axis=-1) / tf.maximum(tf.reduce_sum(mask, axis=-1), 1.0)


def leave_one_out_baselines(totals, group_size):
    """Each sample's baseline: the mean total of the other samples of its prompt (rows grouped)."""
    groups = totals.reshape(-1, group_size)
    return ((groups.sum(axis=1, keepdims=True) - groups) / (group_size - 1)).reshape(-1)


def gae(rewards, values, mask, gamma, lam):
    """(advantages, returns) [n, T] by generalised advantage estimation over the masked positions
    (each row's masked positions must be contiguous); zero elsewhere."""
    advantages = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[0], rewards.dtype)
    for t in reversed(range(rewards.shape[1])):
        has_next = mask[:, t + 1] if t + 1 < rewards.shape[1] else np.zeros(rewards.shape[0], bool)
        next_value = np.where(has_next, values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0, 0.0)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * np.where(has_next, running, 0.0)
        advantages[:, t] = np.where(mask[:, t], running, 0.0)
    return advantages, np.where(mask, advantages + values, 0.0)


def whiten(values, mask):
    """`values` standardised over the masked entries (mean 0, std 1), zero elsewhere."""
    picked = values[mask]
    return np.where(mask, (values - picked.mean()) / (picked.std() + 1e-8), 0.0)


# ---- the objectives --------------------------------------------------------------------------

class PolicyGradientObjective(Objective):
    """What REINFORCE, RLOO and PPO share: rollouts, the KL controller, the loss and its metrics."""

    clipped = False      # PPO's surrogate (and value loss) instead of the plain reward-scaled log-likelihood

    def __init__(self, config):
        super().__init__(config)
        align = config.align
        self.kl = KLController(align.kl_coef, align.target_kl, align.kl_horizon)
        self.maker = None

    @classmethod
    def rollout_size(cls, config):
        return config.train.batch_size

    @classmethod
    def updates_per_rollout(cls, config):
        return 1

    @classmethod
    def load_data(cls, config, wanted=("train", "validation"), show_progress=True):
        """Prompts of the training split in the model's tokens; RL has no validation loss (evaluate.py
        measures reward)."""
        data = config.data
        prompts = policy_prompts(data.data, "train", config.align.prompt_chars, data.text_field, data.max_chunk_chars,
                                 data.validation_data, data.split_by)
        if not prompts:
            raise UserError(f"--data {data.data}: no prompts in the training split")
        loaded = {split: None for split in wanted}
        if "train" in wanted:
            loaded["train"] = prompt_arrays(prompts, config.align.max_new_tokens, tokenizer_for(config),
                                            max_positions(config.model))
        return loaded

    def checkpoint_trackables(self):
        return {"kl_coef": self.kl.value}

    def prepare(self, model):
        config = self.config
        reward = reward_function(config.align.reward_model, config.feedback.scorer)
        reference = policy_reference(config, model)
        self.maker = RolloutMaker(model, reference, reward, config.align, config.runtime.jit_compile,
                                  tokenizer_for(config))
        kind = ("the policy with its LoRA adapters off" if isinstance(reference, AdaptersOff)
                else "a copy of the --init_from policy")
        return {"reward_source": f"maximising {reward.description}", "reference": f"the KL reference is {kind}"}

    # ---- data: a rollout, then its optimizer steps ---------------------------------------------

    def advantages(self, arrays):
        """(advantages, returns) [n, T - 1] of a rollout's arrays, with `kl_coef` applied."""
        raise NotImplementedError

    def batch_plans(self, train_data, first_step):
        """One BatchPlan per rollout: make it, then its optimizer steps over it."""
        config, align = self.config, self.config.align
        updates, size = self.updates_per_rollout(config), self.rollout_size(config)
        prompts_per_rollout = size // align.samples_per_prompt
        rollouts = -(-config.train.train_steps // updates)
        prompts = train_data.arrays
        order = batch_order(train_data.num_examples, rollouts, prompts_per_rollout, config.train.seed)
        for index in range(first_step // updates, rollouts):
            rows = np.repeat(order[index], align.samples_per_prompt)  # a prompt's samples side by side
            seed = (config.train.seed * 1_000_003 + index) % 2**31
            rollout = self.maker.make(prompts["prompt_ids"][rows], prompts["prompt_mask"][rows], seed)
            arrays = rollout.arrays
            arrays["kl_coef"] = np.full(size, float(self.kl), np.float32)
            arrays["advantages"], arrays["returns"] = (x.astype(np.float32) for x in self.advantages(arrays))
            self.kl.update(float(arrays["kl"].sum(axis=1).mean()), size)
            step = index * updates
            log_samples = index % max(1, config.runtime.log_every // updates) == 0
            # Each pass over the rollout visits it in a new order, cut into minibatches.
            passes = updates // (size // config.train.batch_size)
            step_order = np.concatenate([np.random.default_rng([config.train.seed, index, p]).permutation(size)
                                         for p in range(passes)]).reshape(updates, config.train.batch_size)
            skip = max(0, first_step - step)
            yield BatchPlan(ArrayData(arrays, train_data.seq_len), step_order[skip:], step + skip,
                            {"samples": _samples_markdown(rollout)} if log_samples else {})

    # ---- the loss ----------------------------------------------------------------------------

    def compute(self, batch, model, training):
        token_ids, padding_mask = batch["token_ids"], batch["padding_mask"]
        mask = tf.cast(batch["completion_mask"][:, 1:], tf.float32)
        hidden = model.hidden_states(token_ids[:, :-1], padding_mask[:, :-1], training=training)
        logits = model.logits_from_hidden(hidden)
        logprobs = token_logprobs_from_logits(logits, token_ids[:, 1:]) * mask
        advantages = batch["advantages"]
        metrics = {}
        tokens = tf.reduce_sum(mask)
        if self.clipped:
            losses, was_clipped = ppo_policy_losses(logprobs, batch["logprobs"], advantages, mask,
                                                    self.config.align.clip_ratio)
            values = model.value_head(hidden) * mask
            value_loss = value_losses(values, batch["values"], batch["returns"], mask, self.config.align.clip_ratio)
            losses += self.config.align.value_coef * value_loss
            log_ratio = (logprobs - batch["logprobs"]) * mask
            metrics.update(clip_fraction=(tf.reduce_sum(was_clipped), tokens),
                           value_loss=(tf.reduce_sum(value_loss), tf.cast(tf.size(value_loss), tf.float32)),
                           approx_kl_old=(tf.reduce_sum(0.5 * tf.square(log_ratio)), tokens))
        else:
            losses = reinforce_losses(logprobs, advantages, mask)
        log_softmax = tf.nn.log_softmax(logits)
        entropy = -tf.reduce_sum(tf.exp(log_softmax) * log_softmax, axis=-1)
        rows = tf.cast(tf.shape(losses)[0], tf.float32)
        reward = batch["reward"]
        metrics.update(entropy=(tf.reduce_sum(entropy * mask), tokens),
                       reward=(tf.reduce_sum(reward), rows),
                       reward_squared=(tf.reduce_sum(tf.square(reward)), rows),
                       score=(tf.reduce_sum(batch["score"]), rows),
                       kl=(tf.reduce_sum(batch["kl"]), rows),
                       kl_coef=(tf.reduce_sum(batch["kl_coef"]), rows),
                       completion_length=(tf.reduce_sum(batch["length"]), rows),
                       finished=(tf.reduce_sum(batch["finished"]), rows))
        return ObjectiveOutput(losses=losses, metrics=metrics)

    def summarize(self, means):
        out = dict(means)
        if "reward_squared" in out:
            out["reward_std"] = float(np.sqrt(max(out.pop("reward_squared") - out["reward"] ** 2, 0.0)))
        return out


class ReinforceObjective(PolicyGradientObjective):
    name = "reinforce"

    def __init__(self, config):
        super().__init__(config)
        # The moving-average baseline; NaN until the first rollout sets it.
        self.baseline = tf.Variable(float("nan"), trainable=False, dtype=tf.float32, name="baseline")

    def checkpoint_trackables(self):
        return {**super().checkpoint_trackables(), "baseline": self.baseline}

    def advantages(self, arrays):
        totals = arrays["reward"] - arrays["kl_coef"] * arrays["kl"].sum(axis=1)
        if self.config.align.baseline == "moving_average":
            baseline = float(self.baseline.numpy())
            if np.isnan(baseline):
                baseline = float(totals.mean())
            self.baseline.assign(MOVING_AVERAGE_DECAY * baseline + (1 - MOVING_AVERAGE_DECAY) * float(totals.mean()))
            totals = totals - baseline
        return _per_token(totals, arrays), np.zeros_like(arrays["kl"])


class RlooObjective(PolicyGradientObjective):
    name = "rloo"

    def advantages(self, arrays):
        totals = arrays["reward"] - arrays["kl_coef"] * arrays["kl"].sum(axis=1)
        advantages = totals - leave_one_out_baselines(totals, self.config.align.samples_per_prompt)
        return _per_token(advantages, arrays), np.zeros_like(arrays["kl"])


class PpoObjective(PolicyGradientObjective):
    name = "ppo"
    clipped = True

    @classmethod
    def rollout_size(cls, config):
        return config.train.batch_size * config.align.ppo_minibatches

    @classmethod
    def updates_per_rollout(cls, config):
        return config.align.ppo_epochs * config.align.ppo_minibatches

    def advantages(self, arrays):
        mask = arrays["completion_mask"][:, 1:]
        rewards = -arrays["kl_coef"][:, None] * arrays["kl"]
        last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)  # each row's last completion token
        rows = np.flatnonzero(mask.any(axis=1))
        rewards[rows, last[rows]] += arrays["reward"][rows]
        align = self.config.align
        advantages, returns = gae(rewards, arrays["values"], mask, align.gamma, align.gae_lambda)
        return whiten(advantages, mask), returns


def _per_token(sequence_advantages, arrays):
    """A sequence's advantage on each of its completion tokens."""
    return np.where(arrays["completion_mask"][:, 1:], sequence_advantages[:, None], 0.0)


def _samples_markdown(rollout, count=4):
    lines = ["| reward | prompt | completion |", "|---|---|---|"]
    for i in range(min(count, len(rollout.prompts))):
        prompt = rollout.prompts[i]
        cells = [prompt if isinstance(prompt, str) else render_text(prompt, True), rollout.completions[i]]
        cells = ["`" + c.replace("\n", "\u21b5").replace("|", "\\|").replace("`", "'") + "`" for c in cells]
        lines.append(f"| {rollout.scores[i]:.3f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)
