"""Evaluating a fine-tuned policy (RL or DPO) against its reference, the --init_from policy.

Both policies complete the same held-out prompts with the same seeds. Reported:
  * reward and reference_reward: mean reward of their completions under the reward model (the
    run's --reward_model, or evaluate.py's) and/or minus the scorer's score (score_* metrics);
  * {reward}_gain: policy minus reference mean reward. A reward model's rewards are normalised to
    std 1 over its training completions, so when those are samples of the reference policy (as in
    the README's pipeline) this is the gain in the reference's reward standard deviations,
    measured on that large sample;
  * {reward}_gain_in_std: the same gain over the std of the reference's rewards on these prompts
    (the only yardstick a scorer has; with few prompts it moves with a handful of outliers);
  * empty_rate and reference_empty_rate: the fraction of empty completions;
  * win_rate: the fraction of prompts where the policy's completion earns more reward than the
    reference's (ties count one half);
  * kl_to_reference: the mean over policy samples of sum_t log pi - log pi_ref (nats per completion);
  * nll_drift: held-out negative log-likelihood per token of the policy minus that of the
    reference, on the pretraining corpus's validation split (how much language modelling was
    lost), with both perplexities.
"""
import json
import os
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from tfpref.data.batching import map_rows
from tfpref.data.loading import load_text_data
from tfpref.data.pipeline import sequential_order
from tfpref.data.prompts import encode_prompts, policy_prompts
from tfpref.data.tokenizers import tokenizer_for
from tfpref.errors import UserError
from tfpref.data.splits import ALL
from tfpref.models import max_positions
from tfpref.models.logprobs import sequence_logprobs
from tfpref.objectives.mle import MleObjective
from tfpref.rewards import RewardModelReward, ScorerReward
from tfpref.rl.reference import policy_reference
from tfpref.rl.rollouts import RolloutMaker
from tfpref.runs import config_path, load_config

POLICY_SAMPLES_FILE = "policy_samples.jsonl"


@dataclass
class PolicyEvalSettings:
    num_prompts: int = 64
    reward_model: str = ""        # default: the run's own --reward_model
    scorer: str = ""              # also judge by -score of this scorer
    max_new_tokens: int = 0       # 0: the run's --max_new_tokens
    temperature: float = -1.0     # < 0: the run's --temperature
    seed: int = 0
    nll_batches: int = 8
    batch_size: int = 32


def _reward_functions(config, settings):
    functions = {}
    reward_model = settings.reward_model or config.align.reward_model
    if reward_model:
        functions["reward"] = RewardModelReward(reward_model)
    scorer = settings.scorer or ("" if reward_model else config.feedback.scorer)
    if scorer:
        functions["score_reward"] = ScorerReward(scorer)
    return functions


def _win_rate(policy, reference):
    return float(np.mean((policy > reference) + 0.5 * (policy == reference)))


def held_out_nll(model, data, batches, batch_size):
    """Mean negative log-likelihood per target token over the first `batches` batches of TokenData."""
    rows = sequential_order(data.num_examples, batches, batch_size).reshape(-1)
    gather = data.gatherer()

    @tf.function
    def nll(batch):
        mask = batch["padding_mask"]
        return (-tf.reduce_sum(sequence_logprobs(model, batch["token_ids"], mask), axis=1),
                tf.reduce_sum(tf.cast(mask[:, 1:], tf.float32), axis=1))

    totals, counts = map_rows(nll, lambda i: gather(tf.constant(rows[i]), tf.constant(rows[i])), batch_size,
                              num_rows=len(rows))
    return float(totals.sum()) / max(float(counts.sum()), 1.0)


def evaluate_policy(config, model, settings, eval_dir, split="validation"):
    """{metric: value} of the policy `model` of run `config` (see the module docstring) on the
    prompts of `split` of its data ("all": every prompt of the file); samples of both policies go
    to eval_dir/policy_samples.jsonl."""
    if not config.train.init_from or not os.path.exists(config_path(config.train.init_from)):
        raise UserError(f"{config.model_dir}: the reference policy --init_from {config.train.init_from!r} "
                        f"is gone; policy evaluation compares against it")
    source = load_config(config.train.init_from, "--init_from")
    # RL runs' --data holds their prompts; a DPO run's preference file has a "prompt" per record.
    # Split "all" is a whole file (evaluate.py --data): every prompt of it.
    data = config.data
    prompts = policy_prompts(data.data, split, config.align.prompt_chars, data.text_field, data.max_chunk_chars,
                             data.validation_data, data.split_by)
    if prompts == [""]:  # unconditioned data: every completion is a sample from BOS alone
        prompts *= settings.num_prompts
    prompts = prompts[:settings.num_prompts]
    if not prompts:
        raise UserError(f"--data {config.data.data}: no prompts" if split == ALL else
                        f"--split {split}: no prompts in {config.data.data}")
    rewards = _reward_functions(config, settings)
    if not rewards:
        raise UserError("policy evaluation needs a reward: give --reward_model or --scorer")
    align = replace(config.align, max_new_tokens=settings.max_new_tokens or config.align.max_new_tokens,
                    temperature=config.align.temperature if settings.temperature < 0 else settings.temperature,
                    whiten_rewards=False, missing_eos_penalty=0.0)
    # The reference is the policy with its LoRA adapters off when they are new on --init_from's weights.
    reference = policy_reference(config, model)
    tokenizer = tokenizer_for(config)  # prompts, completions and lengths are in the model's tokens
    first = next(iter(rewards.values()))
    jit_compile = config.runtime.jit_compile
    # Every batch as wide as the longest prompt: one traced and compiled sampler and forward pass.
    all_ids, all_mask = encode_prompts(prompts, tokenizer)
    positions = max_positions(config.model)
    if positions is not None and all_ids.shape[1] + align.max_new_tokens > positions:
        raise UserError(f"--max_new_tokens {align.max_new_tokens}: with prompts of up to {all_ids.shape[1]} tokens "
                        f"the samples exceed the model's {positions} positions; lower --max_new_tokens")
    makers = {"policy": RolloutMaker(model, reference, first, align, jit_compile, tokenizer),
              "reference": RolloutMaker(reference, reference, first, align, jit_compile, tokenizer)}
    results = {name: {"completions": [], "finished": [], "kl": [], **{r: [] for r in rewards}} for name in makers}
    for start in range(0, len(prompts), settings.batch_size):
        ids, mask = all_ids[start:start + settings.batch_size], all_mask[start:start + settings.batch_size]
        for name, maker in makers.items():
            rollout = maker.make(ids, mask, settings.seed + start)
            out = results[name]
            out["completions"] += rollout.completions
            out["finished"] += list(rollout.arrays["finished"] > 0)
            out["kl"] += list(rollout.arrays["kl"].sum(axis=1))
            for reward_name, function in rewards.items():
                scores = rollout.scores if function is first else function(rollout.prompts, rollout.completions,
                                                                              rollout.arrays["finished"] > 0)
                out[reward_name] += list(scores)
    policy, ref = results["policy"], results["reference"]
    # Empty completions are worth watching: preference data rarely holds any, so a reward model's
    # value for one is an extrapolation, and a few of them can swing a mean or a std.
    metrics = {"prompts": len(prompts), "kl_to_reference": float(np.mean(policy["kl"])),
               "finished_rate": float(np.mean(policy["finished"])),
               "empty_rate": float(np.mean([c == "" for c in policy["completions"]])),
               "reference_empty_rate": float(np.mean([c == "" for c in ref["completions"]]))}
    for name in rewards:
        p, r = np.array(policy[name]), np.array(ref[name])
        metrics[name] = float(p.mean())
        metrics[f"reference_{name}"] = float(r.mean())
        gain = float(p.mean() - r.mean())
        metrics[f"{name}_gain"] = gain
        metrics[f"{name}_gain_in_std"] = gain / float(r.std() + 1e-8)
        metrics["win_rate" if name == "reward" or len(rewards) == 1 else f"win_rate_{name}"] = _win_rate(p, r)
    metrics.update(_nll_drift(source, model, reference, settings))
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, POLICY_SAMPLES_FILE), "w", encoding="utf-8") as f:
        for i, prompt in enumerate(prompts):
            row = {"prompt": prompt, "completion": policy["completions"][i],
                   "reference_completion": ref["completions"][i],
                   **{name: float(policy[name][i]) for name in rewards},
                   **{f"reference_{name}": float(ref[name][i]) for name in rewards}}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return metrics


def _nll_drift(source, model, reference, settings):
    """Held-out NLL of policy and reference on the pretraining corpus (none for a JSONL corpus)."""
    if source.data.data.endswith(".jsonl"):
        return {}
    data = load_text_data(source, MleObjective, ("validation",), show_progress=False)["validation"]
    if data is None or data.num_examples == 0:
        return {}
    policy_nll = held_out_nll(model, data, settings.nll_batches, settings.batch_size)
    reference_nll = held_out_nll(reference, data, settings.nll_batches, settings.batch_size)
    return {"nll": policy_nll, "reference_nll": reference_nll, "nll_drift": policy_nll - reference_nll,
            "perplexity": float(np.exp(policy_nll)), "reference_perplexity": float(np.exp(reference_nll))}
