"""Supervised fine-tuning data: prompts and the completions to imitate, one padded row per record.

A JSONL file holds records of one kind, text or conversational (TRL's field names):
  * {"prompt": str, "completion": str}
        row: BOS prompt completion EOS                      trained on: completion EOS
  * {"prompt": [messages], "completion": [assistant messages]}
        row: BOS <chat template of prompt + completion>      trained on: the completion's content and <|end|>
  * {"messages": [messages]}, a whole conversation
        row: BOS <chat template of messages>                 trained on: every assistant message's content
                                                              and <|end|>
The chat template is tfpref.data.chat's. Rows carry `completion_mask` (what is trained on by
default) beside `padding_mask` (every real token: what --prompt_loss trains on); the objective
chooses, and always reports NLL on the completion.

A row is seq_len + 1 tokens, right-padded. A longer record loses its beginning, as preference
records do (tfpref.data.preferences.encode_completion): the prompt's start first, so the
completion and its end of turn, what is learned, are kept; a one-line note says how many were cut.

Records are split as preference records are (`prompt_split`: by the prompt, or by a conversation's
first user message), so a prompt held out here is held out of every run on the same prompts.

Example:
    >>> data = load_sft_data("sft.jsonl", seq_len=256, split="train")
    >>> data.arrays["token_ids"].shape, data.records[0].prompt
"""
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from tfpref.data.chat import conversation_ids, is_conversation, parse_messages
from tfpref.data.corpus import jsonl_records
from tfpref.data.splits import ALL, choose_split_by, explicit_split, record_split, roles
from tfpref.data.pipeline import ArrayData
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.errors import UserError, location


@dataclass(frozen=True)
class SftRecord:
    prompt: object          # text, or messages ((role, content), ...)
    completion: object      # text, or messages starting with an assistant message
    split: str = None       # 'train', 'validation' or 'test' (tfpref.data.splits)
    whole_conversation: bool = False  # a {"messages"} record: the prompt's assistant turns are trained on too

    @property
    def conversational(self):
        return is_conversation(self.prompt)


@dataclass
class SftData(ArrayData):
    """ArrayData of SFT rows ({'token_ids', 'padding_mask', 'completion_mask'}) and their records,
    whose prompts and completions evaluation samples and compares against."""
    records: list = field(default_factory=list)


def _parse_record(path, number, record):
    if "messages" in record:
        messages = parse_messages(record["messages"], path, number, "messages")
        last = max((i for i, (role, _) in enumerate(messages) if role == "assistant"), default=None)
        if last is None:
            raise UserError(f"{location(path, number, 'messages')} has no assistant message (nothing to train on)")
        # The last assistant turn and its context: the prompt that evaluation asks the model to answer.
        return SftRecord(messages[:last], messages[last:], explicit_split(path, number, record),
                         whole_conversation=True)
    for name in ("prompt", "completion"):
        if name not in record:
            raise UserError(f"{location(path, number, name)} is missing (an SFT record is "
                            f"{{\"prompt\", \"completion\"}} or {{\"messages\"}})")
    prompt, completion = record["prompt"], record["completion"]
    if is_conversation(prompt) != is_conversation(completion):
        raise UserError(f"{location(path, number, 'completion')} must be "
                        f"{'a list of assistant messages' if is_conversation(prompt) else 'a string'}, as 'prompt' "
                        f"is {'a conversation' if is_conversation(prompt) else 'a string'}")
    if is_conversation(prompt):
        prompt = parse_messages(prompt, path, number, "prompt")
        completion = parse_messages(completion, path, number, "completion", roles=("assistant",))
    else:
        for name, value in (("prompt", prompt), ("completion", completion)):
            if not isinstance(value, str):
                raise UserError(f"{location(path, number, name)} must be a string, got {type(value).__name__}")
        if not completion:
            raise UserError(f"{location(path, number, 'completion')} is empty")
    return SftRecord(prompt, completion, explicit_split(path, number, record))


def read_sft_records(path, split_by="prompt", role="data"):
    """[SftRecord] of every record of an SFT JSONL file, each with its split (tfpref.data.splits: its
    own `split` field, `role` "train"/"validation" with --validation_data, else a hash of its prompt
    or of the record, by `split_by`: "prompt", "record" or "auto"); a bad record is a UserError naming
    file, line and field, as is a file mixing text and conversational records."""
    if not str(path).endswith(".jsonl"):
        raise UserError(f"{path}: SFT needs a JSONL file of {{\"prompt\", \"completion\"}} or "
                        f"{{\"messages\"}} records")
    records, kind, keys = [], None, []
    for number, record in jsonl_records(path):
        parsed = _parse_record(path, number, record)
        keys.append(f"line:{number}")
        kind = parsed.conversational if kind is None else kind
        if parsed.conversational != kind:
            raise UserError(f"{location(path, number)}: a {'conversational' if kind else 'text'} file has a "
                            f"{'conversational' if parsed.conversational else 'text'} record (one kind per file)")
        records.append(parsed)
    if not records:
        raise UserError(f"{path}: no SFT records")
    if split_by == "auto":
        split_by, _ = choose_split_by([r.prompt for r in records])
    return [dataclasses.replace(r, split=record_split(r.split, r.prompt, key, split_by, role))
            for r, key in zip(records, keys)]


def encode_sft_record(record, tokenizer=None):
    """(ids, completion_mask) of a record, without BOS and uncut: what the model reads and what it is
    trained to write (see the module docstring)."""
    tokenizer = tokenizer or ByteTokenizer()
    if record.conversational:
        prompt_length = len(conversation_ids(record.prompt, tokenizer)[0]) + 1  # + <|assistant|>
        ids, mask = conversation_ids(record.prompt + record.completion, tokenizer)
        if not record.whole_conversation:
            mask[:prompt_length] = False
        return ids, mask
    prompt, completion = tokenizer.encode(record.prompt), tokenizer.encode(record.completion, add_eos=True)
    return (np.concatenate([prompt, completion]).astype(np.int32),
            np.arange(len(prompt) + len(completion)) >= len(prompt))


def sft_arrays(records, seq_len, tokenizer=None):
    """({'token_ids', 'padding_mask', 'completion_mask'} [n, seq_len + 1], how many records were cut)."""
    tokenizer, cut = tokenizer or ByteTokenizer(), 0
    token_ids = np.full([len(records), seq_len + 1], tokenizer.pad_id, np.int32)
    padding_mask = np.zeros(token_ids.shape, bool)
    completion_mask = np.zeros(token_ids.shape, bool)
    for row, record in enumerate(records):
        ids, mask = encode_sft_record(record, tokenizer)
        cut += len(ids) > seq_len
        ids, mask = ids[-seq_len:], mask[-seq_len:]  # the beginning goes: the prompt's first
        token_ids[row, :len(ids) + 1] = np.concatenate([[tokenizer.bos_id], ids])
        padding_mask[row, :len(ids) + 1] = True
        completion_mask[row, 1:len(ids) + 1] = mask
    return {"token_ids": token_ids, "padding_mask": padding_mask, "completion_mask": completion_mask}, cut


def load_sft_data(path, seq_len, split=ALL, split_by="prompt", validation_data="", tokenizer=None):
    """SftData of the records of `split` of an SFT JSONL file (and of `validation_data`, which is all
    validation); None when there are none.

    Args:
        path: the JSONL file (see the module docstring for its records).
        seq_len: tokens a row holds after BOS.
        split: 'train', 'validation', 'test' or 'all' (tfpref.data.splits).
        split_by: how records without a `split` field are held out: "prompt", "record" or "auto".
        tokenizer: the model's tokenizer (default: bytes); its control tokens are the chat template's
            markers.
    """
    records = [r for file, role in roles(path, validation_data) for r in read_sft_records(file, split_by, role)
               if split == ALL or r.split == split]
    if not records:
        return None
    tokenizer = tokenizer or ByteTokenizer()
    arrays, cut = sft_arrays(records, seq_len, tokenizer)
    if cut:
        which = f"{split} records" if split else "records"
        print(f"note: {path}: {cut} of {len(records)} {which} are longer than --seq_len {seq_len}; "
              f"their beginnings were cut (the prompt's first)", flush=True)
    return SftData(arrays, seq_len, records)


__all__ = ["SftRecord", "SftData", "read_sft_records", "encode_sft_record", "sft_arrays", "load_sft_data"]
