"""Which split a record belongs to, for every kind of data: train, validation or test.

In order of precedence:
  1. a record's own `split` field ("train", "validation" or "test"), where records have fields;
  2. `--validation_data FILE`: every record of --data trains and every record of FILE validates;
  3. otherwise a hash, the same on every run and machine:
       * documents of a corpus by their key (path, JSONL line): 90/5/5 (`document_split`);
       * records with prompts (preferences, prompts, SFT) by prompt when prompts vary, so that all
         completions of a prompt land in one split and a policy is evaluated on prompts it never
         trained on; by record when one prompt is shared by many records (an empty prompt: the
         judgement is about the texts themselves), since hashing that one prompt would send every
         record to one split. `--split_by auto` decides from the data (`choose_split_by`); the
         run's config.json records what was used.
`ALL` names every record at once: what `evaluate.py --data FILE` evaluates.
"""
import hashlib
import json
from collections import Counter

from tfpref.data.chat import split_key
from tfpref.errors import UserError, location

SPLITS = ("train", "validation", "test")
ALL = "all"
SPLIT_BY = ("auto", "prompt", "record")
# Auto: split by record when the most common prompt holds more than this share of the records (a
# prompt that large cannot go to a held-out split, or stay in training, without skewing both).
MAX_PROMPT_SHARE = 0.05


def hash_bucket(key):
    """0..99 from a hash of `key`: the same on every run and machine (what the splits are cut from)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:4], "big") % 100


def document_split(key):
    """'train' (90%), 'validation' (5%) or 'test' (5%) for a document key."""
    bucket = hash_bucket(key)
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def prompt_split(key):
    """'train', 'validation' or 'test' for a prompt (or a record) key, 90/5/5.

    The held-out buckets 0-9 are those that made the validation split before a test split existed,
    halved, so that the training split is what it always was.
    """
    bucket = hash_bucket(key)
    return "validation" if bucket < 5 else "test" if bucket < 10 else "train"


def prompt_key(prompt):
    """A string key of a prompt: itself, or a conversation's first user message (so a plain and a
    conversational record asking the same thing land in one split, and every continuation of a
    conversation goes with its opening: tfpref.data.chat.split_key). A value that is neither (a record
    not validated yet, when `--split_by auto` reads the prompts first) gets its JSON: its loader
    reports what is wrong with it."""
    try:
        return split_key(prompt)
    except (TypeError, ValueError, AttributeError):
        return json.dumps(prompt, sort_keys=True, default=str)


def explicit_split(path, number, record):
    """The record's own `split` field, or None when it has none."""
    if "split" not in record:
        return None
    value = record["split"]
    if value not in SPLITS:
        raise UserError(f"{location(path, number, 'split')} must be one of {', '.join(SPLITS)}, got {value!r} "
                        f"(or leave the field out to let tfpref choose)")
    return value


def choose_split_by(prompts):
    """('prompt' or 'record', why) for records with these prompts (see the module docstring)."""
    counts = Counter(prompt_key(p) for p in prompts)
    if not counts:
        return "prompt", "no records"
    top, top_count = counts.most_common(1)[0]
    share = top_count / sum(counts.values())
    if share > MAX_PROMPT_SHARE:
        shown = "the empty prompt" if top == "" else f"one prompt ({top[:30]!r})"
        return "record", f"{shown} holds {share:.0%} of {sum(counts.values())} records"
    return "prompt", f"{len(counts)} distinct prompts, none above {MAX_PROMPT_SHARE:.0%} of the records"


def record_split(explicit, prompt, record_key, split_by, role):
    """The split of one record.

    Args:
        explicit: its own `split` field, or None.
        prompt, record_key: what a hash split reads, by prompt or by record.
        split_by: "prompt" or "record" (resolved, not "auto").
        role: "data" (split by hash), "train" (--data when --validation_data is given: all of it
            trains) or "validation" (the --validation_data file: all of it validates).
    """
    if explicit is not None:
        return explicit
    if role != "data":
        return role
    return prompt_split(prompt_key(prompt) if split_by == "prompt" else record_key)


def roles(data, validation_data):
    """[(path, role)] of the files a run's data comes from."""
    if not validation_data:
        return [(data, "data")]
    return [(data, "train"), (validation_data, "validation")]


def select(parts, name):
    """`parts[name]` of a {split: list} dict, or all of them concatenated for ALL."""
    if name == ALL:
        return [item for split in SPLITS for item in parts[split]]
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r} (choose from {', '.join(SPLITS + (ALL,))})")
    return parts[name]
