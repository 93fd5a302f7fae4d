"""Sample completions of prompts with a run's model and score them: evaluate.py's sampling half.

Prompts come from `--prompts FILE` (JSONL with a `prompt` field and optionally `reference`, or
TRL's `completion`; any other file is one prompt per line) or, by default, from the evaluated
split: the first line (at most 64 bytes) of each held-out chunk, with the text that really
followed it as the reference, so the default task gets BLEU/ROUGE-L too. An SFT run's split gives
its records' own prompts, with their completions as references.

A prompt may be a conversation (TRL's list of messages, in a prompts file or an SFT split): it is
rendered by the chat template with the generation prompt, and its reply ends at `<|end|>`
(tfpref.data.chat). Its item keeps the messages, with the template spelled out as "prompt".
"""
import dataclasses
import json
import os

import numpy as np

from tfpref.data.chat import chat_generation, is_conversation, parse_messages, render, render_text, to_dicts
from tfpref.data.corpus import jsonl_records
from tfpref.data.sft import SftData
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.errors import UserError, location
from tfpref.evaluation.text_metrics import generation_metrics
from tfpref.models.sampling import Sampler, left_pad

SAMPLES_FILE = "samples.jsonl"
DEFAULT_PROMPT_BYTES = 64
# Prompts are left-padded to a multiple of this, so a few compiled shapes serve every batch.
_PROMPT_BUCKET = 32


@dataclasses.dataclass
class SamplingSettings:
    """What evaluate.py's sampling flags ask for."""
    num_samples: int = 16
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    prompts: str = None
    batch_size: int = 32

    def validate(self):
        checks = [(self.num_samples >= 0, "--num_samples must be >= 0"),
                  (self.max_new_tokens > 0, "--max_new_tokens must be positive"),
                  (self.temperature >= 0, "--temperature must be >= 0 (0 is greedy)"),
                  (self.top_k >= 0, "--top_k must be >= 0 (0 is off)"),
                  (0 < self.top_p <= 1, "--top_p must be in (0, 1]"),
                  (self.batch_size > 0, "--batch_size must be positive")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def load_prompts(path, limit):
    """[{"prompt", "reference"?}] from a prompts file (see the module docstring)."""
    if not os.path.isfile(path):
        raise UserError(f"--prompts {path}: no such file")
    items = []
    if path.endswith(".jsonl"):
        for number, record in jsonl_records(path):
            prompt = record.get("prompt")
            if is_conversation(prompt):
                item = chat_item(parse_messages(prompt, path, number, "prompt"))
            elif not isinstance(prompt, str) or not prompt:
                raise UserError(f"{location(path, number, 'prompt')}: missing or not a non-empty string")
            else:
                item = {"prompt": prompt}
            for field in ("reference", "completion"):
                if field in record:
                    value = record[field]
                    if is_conversation(value):  # TRL's conversational completion: the reply's text
                        value = parse_messages(value, path, number, field, roles=("assistant",))[0][1]
                    if not isinstance(value, str):
                        raise UserError(f"{location(path, number, field)}: not a string")
                    item["reference"] = value
            items.append(item)
    else:
        try:
            with open(path, encoding="utf-8") as f:
                items = [{"prompt": line.rstrip("\n")} for line in f if line.strip()]
        except UnicodeDecodeError:
            raise UserError(f"{path}: not valid UTF-8") from None
    if not items:
        raise UserError(f"--prompts {path}: no prompts")
    with_reference = sum("reference" in item for item in items[:limit])
    if 0 < with_reference < len(items[:limit]):
        raise UserError(f"--prompts {path}: either every prompt has a reference or none has")
    conversations = sum("messages" in item for item in items[:limit])
    if 0 < conversations < len(items[:limit]):
        raise UserError(f"--prompts {path}: either every prompt is a conversation or none is")
    return items[:limit]


def chat_item(messages):
    """The item of a conversational prompt: its messages, and the template as readable text."""
    return {"prompt": render_text(messages, add_generation_prompt=True), "messages": to_dicts(messages)}


def split_prompts(data, limit, max_new_tokens, tokenizer=None):
    """Prompts and references of the first `limit` examples of a split: cut from the chunks of
    TokenData, or an SFT split's own prompts with their completions (each cut to `max_new_tokens`
    tokens of `tokenizer`, the run's (default: bytes), what a sample can reach)."""
    tokenizer = tokenizer or ByteTokenizer()
    if isinstance(data, SftData):
        return [_sft_item(record, max_new_tokens, tokenizer) for record in data.records[:limit]]
    items = []
    for start, length in zip(data.starts[:limit], data.lengths[:limit]):
        text = tokenizer.decode(data.stream[start:start + length])
        head = text[:DEFAULT_PROMPT_BYTES]
        cut = head.find("\n") + 1 or len(head)
        items.append({"prompt": text[:cut], "reference": _first_tokens(text[cut:], max_new_tokens, tokenizer)})
    return items


def _sft_item(record, max_new_tokens, tokenizer):
    if record.conversational:  # the reference is the reply: the first assistant message
        return {**chat_item(record.prompt),
                "reference": _first_tokens(record.completion[0][1], max_new_tokens, tokenizer)}
    return {"prompt": record.prompt, "reference": _first_tokens(record.completion, max_new_tokens, tokenizer)}


def _first_tokens(text, count, tokenizer):
    if isinstance(tokenizer, ByteTokenizer):  # a character cut in two is dropped, not replaced
        return text.encode("utf-8")[:count].decode("utf-8", errors="ignore")
    return tokenizer.decode(tokenizer.encode(text)[:count])


def sample_completions(model, items, settings, tokenizer=None):
    """`items` with "completion", "num_tokens", "finished" and "logprob" (sum) added.

    Generation is asked for aligned text as the `CausalLM` `model` is conditioned (a control token
    after BOS, a preference vector), with its banned ids, and stops at its end token. Prompts are
    encoded and completions decoded by `tokenizer`, the model's (default: bytes). Conversational
    items (with "messages", all of them or none) are rendered by the chat template and their
    replies stop at `<|end|>` (the template's role tokens are control tokens of every vocabulary:
    a preset's grows by them).
    """
    tokenizer = tokenizer or ByteTokenizer()
    prefix = list(model.prompt_prefix(True))
    chat = "messages" in items[0]
    texts = [] if chat else tokenizer.encode_all([item["prompt"] for item in items])
    encoded = [np.concatenate([[tokenizer.bos_id], prefix, render(item["messages"], True, tokenizer)
                               if chat else texts[index]]).astype(np.int32) for index, item in enumerate(items)]
    positions = model.backbone.max_seq_len
    for index, ids in enumerate(encoded):
        if positions and len(ids) + settings.max_new_tokens > positions:  # an LSTM has no limit
            raise UserError(f"prompt {index + 1}: {len(ids)} tokens with --max_new_tokens "
                            f"{settings.max_new_tokens} exceeds the model's {positions} positions")
    eos_id, banned_ids = (chat_generation(model.banned_ids(True), tokenizer) if chat
                          else (model.eos_id, model.banned_ids(True)))
    sampler = Sampler(model, settings.max_new_tokens, banned_ids=banned_ids, eos_id=eos_id)
    results = []
    for begin in range(0, len(items), settings.batch_size):
        batch = encoded[begin:begin + settings.batch_size]
        width = -(-max(len(ids) for ids in batch) // _PROMPT_BUCKET) * _PROMPT_BUCKET
        ids, mask = left_pad(batch, width, tokenizer.pad_id)
        condition = model.condition(len(batch), True)
        out = sampler(ids, mask, temperature=settings.temperature, top_k=settings.top_k,
                      top_p=settings.top_p, seed=settings.seed + begin, embedding_offset=condition)
        for row, item in enumerate(items[begin:begin + settings.batch_size]):
            tokens = out["tokens"][row][out["mask"][row]]
            results.append({**item, "completion": tokenizer.decode(tokens),
                            "num_tokens": int(out["lengths"][row]), "finished": bool(out["finished"][row]),
                            "logprob": float(out["logprobs"][row].sum())})
    return results


def sample_and_score(model, items, settings, eval_dir, tokenizer=None):
    """Sample `items` (prompts in `tokenizer`'s vocabulary, the model's; default: bytes), write
    samples.jsonl to `eval_dir`, return the generation metrics."""
    samples = sample_completions(model, items, settings, tokenizer)
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, SAMPLES_FILE), "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    completions = [s["completion"] for s in samples]
    references = [s["reference"] for s in samples] if "reference" in samples[0] else None
    metrics = generation_metrics(completions, references)
    metrics.update(sample_tokens=float(np.mean([s["num_tokens"] for s in samples])),
                   sample_eos_rate=float(np.mean([s["finished"] for s in samples])))
    return metrics
