"""TRL's RLOOTrainer at the shape of `rl_throughput.py`: the PyTorch reference it is compared with.

Run by `rl_throughput.py` in a child process (`--peer_python`: an interpreter with torch, trl,
transformers and datasets, e.g. a venv made with `pip install -e '.[peers]'`), so that PyTorch and
TensorFlow never share a process or its thread pools. It imports no TensorFlow: only tfpref's PEP 8
scorer (pycodestyle), to give TRL the very reward tfpref trains on.

Everything is built here, nothing is downloaded:
  * a byte-level tokenizer with tfpref's vocabulary (ids 0-15 reserved: PAD, BOS, EOS, control ids;
    byte b is id 16 + b; BOS starts every prompt), from the `tokenizers` library;
  * a GPT-2 of the tfpref transformer's shape (4 layers, d_model 128, 4 heads, ff 512, that
    vocabulary) with random weights, saved to --work_dir so that TRL loads the policy and builds its
    reference from the same files;
  * the reward: minus tfpref's pep8 score of prompt + completion, a cut-off last line scored without
    its trailing spaces (`tfpref.scorers.base.scored_text`), as `tfpref.rewards.ScorerReward` does.
RLOOTrainer runs K completions per prompt, --prompts_per_step prompts per optimizer step, sampled at
temperature 1 with its KV-cached `generate`, and the KL penalty (beta) to the reference in the reward.

A step's time is measured between the ends of consecutive optimizer steps (a callback), so it holds
generation, the log-prob passes, the reward and the update; the split comes from timers around
RLOOTrainer's own methods (`_generate`, `_calculate_rewards`, `_get_per_token_logps_and_entropies`
without gradients), private names of TRL 1.x that are skipped if a version lacks them.

Output: one JSON object on stdout; progress on stderr.

Usage (normally from rl_throughput.py):
    /path/to/peers/bin/python benchmarks/trl_rloo_peer.py --prompts prompts.json --work_dir /tmp/trl
"""
import argparse
import collections
import contextlib
import functools
import json
import os
import statistics
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_SPECIAL, PAD_ID, BOS_ID, EOS_ID = 16, 0, 1, 2  # tfpref.data.tokenizer's layout


def log(message):
    print(f"[trl_rloo_peer] {message}", file=sys.stderr, flush=True)


def byte_tokenizer():
    """A transformers tokenizer of tfpref's byte vocabulary (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte-to-character map

    specials = ["<pad>", "<bos>", "<eos>"] + [f"<control_{i}>" for i in range(3, NUM_SPECIAL)]
    vocab = {name: i for i, name in enumerate(specials)}
    vocab.update({char: NUM_SPECIAL + byte for byte, char in bytes_to_unicode().items()})
    # No merges: every byte is one token, as in tfpref.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS_ID)])
    tokenizer.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", padding_side="left")


def save_random_gpt2(path, vocab_size, max_positions, seed):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=max_positions, n_embd=128, n_layer=4, n_head=4,
                        n_inner=512, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    GPT2LMHeadModel(config).save_pretrained(path)


def pep8_reward(lengths):
    """reward(prompts, completions, completion_ids) = -pep8 score, as tfpref's ScorerReward; appends the
    completions' lengths (tokens) to `lengths`."""
    sys.path.insert(0, REPO)  # tfpref's scorers need pycodestyle and NumPy, not TensorFlow
    from tfpref.scorers.base import scored_text
    from tfpref.scorers.pep8 import Pep8Scorer

    scorer = Pep8Scorer()

    def pep8(prompts, completions, completion_ids, **kwargs):
        lengths.extend(len(ids) for ids in completion_ids)
        finished = [bool(ids) and ids[-1] == EOS_ID for ids in completion_ids]
        texts = [scored_text(p + c, f) for p, c, f in zip(prompts, completions, finished)]
        return [-float(s) for s in scorer.score(texts)]

    return pep8


class Timers:
    """Seconds spent in some of RLOOTrainer's methods, and the end time of each optimizer step."""

    def __init__(self):
        self.seconds = collections.defaultdict(list)
        self.step_ends = []

    def wrap(self, trainer, method, name, only_without_grad=False):
        import torch

        original = getattr(trainer, method, None)
        if original is None:
            log(f"this TRL has no {method}: no '{name}' time")
            return

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if only_without_grad and torch.is_grad_enabled():
                return original(*args, **kwargs)
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name].append((trainer.state.global_step, time.perf_counter() - began))

        setattr(trainer, method, timed)

    def callback(self):
        from transformers import TrainerCallback

        timers = self

        class StepEnds(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                timers.step_ends.append(time.perf_counter())

        return StepEnds()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", required=True, help="JSON file: a list of prompt strings")
    parser.add_argument("--work_dir", required=True, help="where the random GPT-2 and TRL's output go")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup_steps", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--samples_per_prompt", type=int, default=4)
    parser.add_argument("--prompts_per_step", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--kl_coef", type=float, default=0.05)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    import trl
    import transformers
    from datasets import Dataset

    transformers.utils.logging.disable_progress_bar()
    warnings.simplefilter("ignore", FutureWarning)  # transformers' renames: noise on stderr, nothing here uses them
    torch.set_num_threads(args.threads)
    with open(args.prompts, encoding="utf-8") as f:
        prompts = json.load(f)
    tokenizer = byte_tokenizer()
    longest = max(len(tokenizer(p)["input_ids"]) for p in prompts)
    model_dir = os.path.join(args.work_dir, "random_gpt2")
    save_random_gpt2(model_dir, len(tokenizer), longest + args.max_new_tokens, args.seed)
    tokenizer.save_pretrained(model_dir)

    completions_per_step = args.samples_per_prompt * args.prompts_per_step
    total_steps = args.warmup_steps + args.steps
    config = trl.RLOOConfig(
        output_dir=os.path.join(args.work_dir, "output"), per_device_train_batch_size=completions_per_step,
        gradient_accumulation_steps=1, num_generations=args.samples_per_prompt,
        max_completion_length=args.max_new_tokens, temperature=1.0, beta=args.kl_coef,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, max_steps=total_steps,
        use_cpu=True, bf16=False, fp16=False, seed=args.seed, report_to="none", save_strategy="no",
        logging_steps=10 ** 6, disable_tqdm=True, dataloader_num_workers=0)
    timers, lengths = Timers(), []
    trainer = trl.RLOOTrainer(model=model_dir, reward_funcs=pep8_reward(lengths), args=config,
                              train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer)
    timers.wrap(trainer, "_generate", "sampling")
    timers.wrap(trainer, "_calculate_rewards", "scoring")
    timers.wrap(trainer, "_get_per_token_logps_and_entropies", "logprobs", only_without_grad=True)
    trainer.add_callback(timers.callback())
    log(f"{total_steps} steps ({args.warmup_steps} untimed) of {completions_per_step} completions, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, trl {trl.__version__}")
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its final metrics: stdout is the result's
        trainer.train()
    log(f"trained in {time.perf_counter() - began:.1f} s")

    ends = timers.step_ends
    timed = ends[args.warmup_steps - 1:] if args.warmup_steps else [began] + ends
    seconds = timed[-1] - timed[0]
    steps = len(timed) - 1
    split = {name: sum(s for step, s in values if step >= args.warmup_steps) / steps
             for name, values in timers.seconds.items()}
    step_seconds = seconds / steps
    split["update"] = step_seconds - sum(split.values())
    durations = [b - a for a, b in zip(timed, timed[1:])]
    print(json.dumps({
        "impl": "trl", "algorithm": "rloo", "completions_per_second": round(steps * completions_per_step / seconds, 1),
        "completions_per_second_median": round(completions_per_step / statistics.median(durations), 1),
        "rollout_seconds": round(step_seconds, 4), "rollout_seconds_median": round(statistics.median(durations), 4),
        "seconds_per_rollout": {k: round(v, 4) for k, v in split.items()}, "timed_rollouts": steps,
        "completions_per_rollout": completions_per_step, "optimizer_steps_per_rollout": 1,
        "mean_completion_length": round(float(statistics.mean(lengths[-steps * completions_per_step:])), 1),
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "trl": trl.__version__,
        "transformers": transformers.__version__}), flush=True)


if __name__ == "__main__":
    main()
