"""The whole alignment pipeline on a tiny keras-hub preset, through the command line:
SFT -> reward model -> DPO with LoRA -> RLOO with a KL penalty -> export, and a fresh process that
serves `generate` and `reward` with plain TensorFlow (and TensorFlow Text), without tfpref."""
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import run_cli_in_process
from keras_hub_presets import save_tiny_gpt2_preset
from tfpref.cli import train_main
from tfpref.data.tokenizers import KerasHubTokenizer
from tfpref.models.sampling import Sampler, left_pad
from tfpref.rewards import RewardModelReward
from tfpref.runs import load_run

COMMON = ["--seq_len", "32", "--batch_size", "4", "--warmup_steps", "1", "--eval_batches", "1", "--no_progress",
          "--no-jit_compile"]
NEW = 6

# A fresh interpreter: TensorFlow and TensorFlow Text (the preset tokenizer's ops), no tfpref.
CLIENT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
assert "tfpref" not in sys.modules
policy, reward_model, prompts, completions, new = sys.argv[1:6]
prompts, completions = json.loads(prompts), json.loads(completions)
generated = tf.saved_model.load(policy).signatures["generate"](
    prompts=tf.constant(prompts), max_new_tokens=tf.constant(int(new)), temperature=tf.constant(0.0),
    top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0))
rewards = tf.saved_model.load(reward_model).signatures["reward"](
    prompts=tf.constant(prompts), completions=tf.constant(completions))["reward"]
print(json.dumps({"completions": [c.decode("utf-8", "replace") for c in generated["completions"].numpy()],
                  "logprob": generated["logprob"].numpy().tolist(), "rewards": rewards.numpy().tolist()}))
"""


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def train(args):
    result = run_cli_in_process(train_main, [*args, *COMMON])
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_sft_reward_model_dpo_rloo_export_and_serve_on_a_preset(tmp_path):
    preset = save_tiny_gpt2_preset(tmp_path / "preset")
    names = ["add", "sub", "mul", "neg", "inc", "dec", "sq", "half"]
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"def {n}(x):\n", "completion": "    return x\n"}
                                               for n in names * 4])
    # The preferred completion returns; the rejected one passes (a preference the reward model can see).
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"def {n}{i}(x):\n", "chosen": "    return x\n", "rejected": "    pass\n", "id": i,
         "annotator": "r1"} for i, n in enumerate(names * 4)])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"def {n}(y):\n"} for n in names * 2])
    runs = {name: str(tmp_path / name) for name in ("sft", "rm", "dpo", "rloo")}

    train(["--model", "keras_hub", "--preset", preset, "--objective", "sft", "--data", sft, "--train_steps", "8",
           "--learning_rate", "3e-3", "--no-export", "--model_dir", runs["sft"]])
    train(["--objective", "reward_model", "--init_from", runs["sft"], "--data", pairs, "--train_steps", "12",
           "--learning_rate", "3e-3", "--model_dir", runs["rm"]])
    train(["--objective", "dpo", "--init_from", runs["sft"], "--lora_rank", "2", "--data", pairs,
           "--train_steps", "4", "--learning_rate", "1e-2", "--no-export", "--model_dir", runs["dpo"]])
    train(["--objective", "rloo", "--init_from", runs["dpo"], "--reward_model", runs["rm"], "--data", prompts,
           "--kl_coef", "0.1", "--samples_per_prompt", "2", "--max_new_tokens", str(NEW), "--train_steps", "3",
           "--learning_rate", "1e-3", "--model_dir", runs["rloo"]])
    for name, run in runs.items():  # every stage trained the preset it started from
        config = json.load(open(f"{run}/config.json"))
        assert config["model"]["model"] == "keras_hub" and config["model"]["preset"] == preset, name
    assert json.load(open(f"{runs['rloo']}/config.json"))["model"]["lora_rank"] == 2

    texts = ["def sq(y):\n", "def neg(y):\n"]
    completions = ["    return y\n", "    pass\n"]
    policy_export = json.load(open(f"{runs['rloo']}/train_result.json"))["export"]
    reward_export = json.load(open(f"{runs['rm']}/train_result.json"))["export"]
    done = subprocess.run([sys.executable, "-c", CLIENT, policy_export, reward_export, json.dumps(texts),
                           json.dumps(completions), str(NEW)], capture_output=True, text=True, timeout=300,
                          cwd="/")
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout.strip().splitlines()[-1])

    tokenizer = KerasHubTokenizer(preset)
    _, policy, _ = load_run(runs["rloo"])
    library = Sampler(policy, NEW, banned_ids=policy.banned_ids(), eos_id=policy.eos_id, jit_compile=False)(
        *left_pad([tokenizer.encode(t, add_bos=True) for t in texts]), temperature=0.0)
    assert served["completions"] == [tokenizer.decode(t[m]) for t, m in zip(library["tokens"], library["mask"])]
    np.testing.assert_allclose(served["logprob"], library["logprobs"].sum(1), atol=1e-4)
    rewards = RewardModelReward(runs["rm"])(texts, completions)
    np.testing.assert_allclose(served["rewards"], rewards, atol=1e-4)
    assert rewards[0] > rewards[1]  # the reward model learned the preference it was shown
