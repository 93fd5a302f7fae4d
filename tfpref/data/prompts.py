"""Prompts a policy completes: RL rollouts, simulated preference pairs, policy evaluation.

From a corpus (stdlib by default) a prompt is the start of a top-level function or class: its
first lines, cut at a line end, up to --prompt_chars characters (the first line alone if it is
longer, cut at that length). From a JSONL file, its "prompt" field (preference files have one);
the records are split by prompt as preference records are, so the held-out prompts of a run on
a preference file (its evaluation prompts) are exactly those it never trained on.
"""
import os

import numpy as np

from tfpref.data.chat import is_conversation, parse_messages, render
from tfpref.data.corpus import jsonl_records, load_splits
from tfpref.data.splits import ALL, choose_split_by, explicit_split, record_split, roles, select
from tfpref.data.pipeline import ArrayData
from tfpref.data.tokenizer import ByteTokenizer, left_pad
from tfpref.errors import UserError, location

_STARTS = ("def ", "async def ", "class ", "@")


def prompt_of(chunk, max_chars):
    """The first lines of `chunk` that fit in `max_chars` (at least part of the first line)."""
    lines = chunk.splitlines(keepends=True)
    prompt = ""
    for line in lines:
        if len(prompt) + len(line) > max_chars:
            break
        prompt += line
    return prompt or lines[0][:max_chars]


def policy_prompts(data, split, max_chars, text_field="text", max_chunk_chars=4096, validation_data="",
                   split_by="auto"):
    """Distinct prompts of the `split` ('train', 'validation', 'test' or 'all') of `data` (and of
    `validation_data`), in a stable order; a JSONL file's records split as preference records do
    (tfpref.data.splits), so a policy is evaluated on the held-out prompts of its preference data.
    An empty prompt is a prompt: generation from BOS alone (unconditioned data)."""
    if data.endswith(".jsonl") and os.path.isfile(data):
        records = []
        for path, role in roles(data, validation_data):
            records += [(role, *record) for record in _jsonl_prompts(path)]
        if split_by == "auto":
            split_by, _ = choose_split_by([prompt for role, _, prompt, _ in records if role == "data"])
        prompts = [prompt if is_conversation(prompt) else prompt[-max_chars:] for role, explicit, prompt, key in records
                   if split == ALL or record_split(explicit, prompt, key, split_by, role) == split]
        return list(dict.fromkeys(prompts))
    parts = load_splits(data, text_field, max_chunk_chars, validation_data)
    chunks = [c for c in select(parts, split) if c.strip()]
    functions = [c for c in chunks if c.startswith(_STARTS)]
    prompts = [prompt_of(c, max_chars) for c in (functions or chunks)]
    return list(dict.fromkeys(p for p in prompts if p))


def _jsonl_prompts(path):
    """(explicit split, prompt, record key) of each record of a JSONL file of prompts."""
    for number, record in jsonl_records(path):
        if "prompt" not in record:
            raise UserError(f"{location(path, number, 'prompt')} is missing (RL prompts come from "
                            f"a JSONL file's 'prompt' field)")
        prompt = record["prompt"]
        if is_conversation(prompt):  # TRL's conversational form: asked with the chat template
            prompt = parse_messages(prompt, path, number, "prompt")
        elif not isinstance(prompt, str):
            raise UserError(f"{location(path, number, 'prompt')} must be a string or a list of messages")
        yield explicit_split(path, number, record), prompt, f"line:{number}"


def encode_prompts(prompts, tokenizer=None):
    """(ids int32 [n, width], mask bool), each row BOS + prompt in `tokenizer`'s vocabulary (default:
    bytes), left-padded to the longest; a conversation is rendered by the chat template, ending with
    the generation prompt (its role tokens are control ids, which every vocabulary has)."""
    tokenizer = tokenizer or ByteTokenizer()
    texts = [p for p in prompts if not is_conversation(p)]
    encoded = iter(tokenizer.encode_all(texts, add_bos=True))  # one call: a preset tokenizes per call
    return left_pad([np.concatenate([[tokenizer.bos_id], render(p, True, tokenizer)]).astype(np.int32)
                     if is_conversation(p) else next(encoded) for p in prompts], pad_id=tokenizer.pad_id)


def prompt_arrays(prompts, max_new_tokens, tokenizer=None, max_positions=None):
    """The RL training data: ArrayData of left-padded prompt ids (in `tokenizer`'s vocabulary), as long
    as the longest prompt plus `max_new_tokens` (tokens of that vocabulary). A model with
    `max_positions` (a preset's learned position table) refuses rows that would not fit."""
    ids, mask = encode_prompts(prompts, tokenizer)
    width = ids.shape[1] + max_new_tokens
    if max_positions is not None and width > max_positions:
        raise UserError(f"--max_new_tokens {max_new_tokens}: the longest prompt is {ids.shape[1]} tokens (with BOS), "
                        f"and the two exceed the model's {max_positions} positions; lower --max_new_tokens or "
                        f"--prompt_chars")
    return ArrayData({"prompt_ids": ids, "prompt_mask": mask}, width)


__all__ = ["policy_prompts", "prompt_of", "encode_prompts", "prompt_arrays"]
