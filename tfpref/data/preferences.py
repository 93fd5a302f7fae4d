"""Human preference data: four JSONL formats read into one comparison form.

Formats (one per file; the first record's fields decide which, every record is then checked):
  * pairwise  {"prompt", "chosen", "rejected"}            TRL's field names; optional "margin"
  * rating    {"prompt", "completion", "rating"}          rating: a number, or a list of numbers
                                                          (several raters; rows repeating a prompt
                                                          and completion are merged the same way)
  * clicks    {"prompt", "completion", "clicks", "impressions"}
  * ranking   {"prompt", "completions": [...], "ranking": [...]}  ranking[i] is the rank of
                                                          completions[i], 1 = best, no ties

Every record becomes a `Preference`: a prompt, its completions, and what is known about them: an
order (best first) for pairs and rankings, a target value (mean rating, click-through rate) with a
weight (raters, impressions) for ratings and clicks. `comparisons()` turns any of them into
(prompt, chosen, rejected) pairs: what DPO and a Bradley-Terry reward model train on.

Texts are strings, or TRL's conversational form: `prompt` a list of {"role", "content"} messages
and each completion a list of assistant messages (a record's prompt and completions are either all
text or all messages). Messages are held as tuples of (role, content) pairs and encoded by the chat
template (tfpref.data.chat); a conversational prompt's split is that of its first user message.

Fields not named above (ids, sources, rater details) are ignored: real data carries them.
Simulated data (`tfpref preferences make`) adds what its noisy annotator knew, from which
the ceiling on accuracy is computed: "annotator_p" on a pair (the probability that it prefers the
chosen completion); "annotator_rewards" (one per completion) and "annotator_temperature" on a
ranking (it prefers completion i to j with probability sigmoid((r_i - r_j) / T)).
"""
import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np

from tfpref.data.chat import is_conversation, parse_messages, render, render_completion
from tfpref.data.corpus import jsonl_records
from tfpref.data.splits import ALL, SPLITS, choose_split_by, explicit_split, prompt_key, record_split
from tfpref.data.splits import prompt_split as key_split
from tfpref.data.tokenizer import ByteTokenizer
from tfpref.errors import UserError, location

FORMATS = {  # name -> the fields that identify it
    "pairwise": ("chosen", "rejected"),
    "ranking": ("completions", "ranking"),
    "clicks": ("clicks", "impressions"),
    "rating": ("rating",),
}
# Ratings or clicks as pairs: partners drawn per item, and the seed of the draw.
DEFAULT_PAIRS_PER_ITEM = 4
PAIR_SEED = 0


@dataclass(frozen=True)
class Preference:
    prompt: str                  # or a conversation: ((role, content), ...)
    completions: tuple           # one or more completion strings (or assistant messages, as the prompt)
    order: tuple = None          # completion indices, best first (pairwise, ranking)
    target: float = None         # mean rating or click-through rate (rating, clicks; one completion)
    weight: float = 1.0          # raters or impressions behind `target`
    margin: float = 0.0          # pairwise: how much better chosen is (TRL's optional "margin")
    annotator_p: float = None    # simulated pair: P(annotator prefers the chosen completion)
    annotator_rewards: tuple = None     # simulated ranking: the annotator's hidden reward of each completion
    annotator_temperature: float = None
    split: str = None            # train, validation or test (tfpref.data.splits)

    def preference_p(self, better, worse):
        """P(the simulated annotator prefers completion `better` to `worse`), or None if unknown."""
        if self.annotator_rewards is not None:
            gap = self.annotator_rewards[better] - self.annotator_rewards[worse]
            return 1.0 / (1.0 + math.exp(-gap / self.annotator_temperature))
        return self.annotator_p


@dataclass
class PreferenceSet:
    kind: str          # one of FORMATS
    items: list        # [Preference]
    source: str = ""
    split_by: str = "prompt"  # how the held-out records were chosen (tfpref.data.splits)

    def split(self, name):
        """The items of the 'train', 'validation' or 'test' split, or all of them ('all')."""
        if name == ALL:
            return self
        if name not in SPLITS:  # never a silent fallback to another split
            raise ValueError(f"unknown split {name!r} (choose from {', '.join(SPLITS + (ALL,))})")
        return dataclasses.replace(self, items=[p for p in self.items if p.split == name])

    def comparisons(self, pairs_per_item=DEFAULT_PAIRS_PER_ITEM, min_gap=0.0, seed=PAIR_SEED):
        """[(prompt, chosen, rejected, margin, annotator_p)]: the ordered pairs the data implies.

        Pairs and rankings give all their pairs (k(k-1)/2 for a ranking of k). Ratings and clicks
        give, for each item, up to `pairs_per_item` partners drawn (seeded) among the other items of
        its prompt whose target differs by more than `min_gap`: a bounded number of pairs, never the
        product of all items with all (23,703 ratings of one prompt would make 280 million).
        """
        if self.kind in ("pairwise", "ranking"):
            return [(p.prompt, p.completions[p.order[i]], p.completions[p.order[j]], p.margin,
                     p.preference_p(p.order[i], p.order[j]))
                    for p in self.items for i in range(len(p.order)) for j in range(i + 1, len(p.order))]
        by_prompt = {}
        for p in self.items:
            by_prompt.setdefault(prompt_key(p.prompt), []).append(p)
        rng = np.random.default_rng(seed)
        pairs = []
        for group in by_prompt.values():
            targets = np.array([p.target for p in group])
            for a, b in sampled_partners(targets, pairs_per_item, min_gap, rng):
                better, worse = (group[a], group[b]) if targets[a] > targets[b] else (group[b], group[a])
                pairs.append((better.prompt, better.completions[0], worse.completions[0], 0.0, None))
        return pairs

    def noise_ceiling(self):
        """Expected accuracy of a perfect reward model against these (noisy) labels, or None.

        A pair the annotator labels correctly with probability p is predicted right with
        probability max(p, 1 - p) by the best possible model: the mean of that is the ceiling.
        """
        probabilities = [c[4] for c in self.comparisons()]
        if not probabilities or any(p is None for p in probabilities):
            return None
        return float(np.mean([max(p, 1 - p) for p in probabilities]))


def sampled_partners(targets, pairs_per_item, min_gap, rng):
    """Unordered index pairs (a, b), a != b, |targets[a] - targets[b]| > min_gap: for each item up to
    `pairs_per_item` partners drawn without replacement, each pair kept once. Memory and time grow
    with len(targets) * pairs_per_item, whatever the number of items."""
    n = len(targets)
    if n < 2:
        return []
    order = np.argsort(targets, kind="stable")
    ranked = targets[order]
    pairs = set()
    for a in range(n):
        # Items whose targets are within min_gap of a's are never partners: draw among the rest,
        # found by binary search on the sorted targets.
        low = np.searchsorted(ranked, targets[a] - min_gap, side="left")
        high = np.searchsorted(ranked, targets[a] + min_gap, side="right")
        eligible = n - (high - low)
        if eligible == 0:
            continue
        draws = rng.choice(eligible, size=min(pairs_per_item, eligible), replace=False)
        for d in draws:
            b = int(order[d if d < low else d + (high - low)])
            pairs.add((min(a, b), max(a, b)))
    return sorted(pairs)


def prompt_split(prompt):
    """'train', 'validation' or 'test' for a prompt (text or messages) when records are split by
    prompt (tfpref.data.splits): every completion of a prompt lands in the same split."""
    return key_split(prompt_key(prompt))


# ---- reading and validation ------------------------------------------------------------------

def detect_format(path, number, record):
    for kind, fields in FORMATS.items():
        if all(f in record for f in fields):
            return kind
    expected = "; ".join(f"{kind}: prompt, {', '.join(fields)}" for kind, fields in FORMATS.items())
    raise UserError(f"{location(path, number)}: not a preference record (expected the fields of one "
                    f"format: {expected})")


def _text(path, number, record, name, allow_empty=False):
    if name not in record:
        raise UserError(f"{location(path, number, name)} is missing")
    value = record[name]
    if not isinstance(value, str):
        raise UserError(f"{location(path, number, name)} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise UserError(f"{location(path, number, name)} is empty")
    return value


def _prompt(path, number, record):
    """A record's prompt: a string (possibly empty) or a conversation of any roles."""
    if is_conversation(record.get("prompt")):
        return parse_messages(record["prompt"], path, number, "prompt")
    return _text(path, number, record, "prompt", allow_empty=True)


def _completion(path, number, record, name, prompt):
    """Field `name` of `record` as a completion of `prompt`: a non-empty string for a text prompt, a
    list of assistant messages for a conversational one."""
    chat = is_conversation(prompt)
    if name in record and is_conversation(record[name]) != chat:
        expected = "a list of assistant messages, as 'prompt' is" if chat else "a string, as 'prompt' is not"
        raise UserError(f"{location(path, number, name)} must be {expected} a conversation, "
                        f"got {type(record[name]).__name__}")
    if chat and name in record:
        return parse_messages(record[name], path, number, name, roles=("assistant",))
    return _text(path, number, record, name)  # also the error of a missing field


def _number(path, number, record, name, integer=False, required=True):
    if name not in record:
        if required:
            raise UserError(f"{location(path, number, name)} is missing")
        return None
    value = record[name]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise UserError(f"{location(path, number, name)} must be {'an integer' if integer else 'a number'}, "
                        f"got {value!r}")
    return value


def _parse_pairwise(path, number, record, prompt):
    chosen = _completion(path, number, record, "chosen", prompt)
    rejected = _completion(path, number, record, "rejected", prompt)
    if chosen == rejected:
        raise UserError(f"{location(path, number, 'rejected')} is identical to 'chosen' (a tie; "
                        f"pairs must differ)")
    margin = _number(path, number, record, "margin", required=False) or 0.0
    annotator_p = _number(path, number, record, "annotator_p", required=False)
    if annotator_p is not None and not 0.0 <= annotator_p <= 1.0:
        raise UserError(f"{location(path, number, 'annotator_p')} must be in [0, 1], got {annotator_p}")
    return Preference(prompt, (chosen, rejected), order=(0, 1), margin=float(margin), annotator_p=annotator_p)


def _parse_ranking(path, number, record, prompt):
    completions, ranks = record["completions"], record["ranking"]
    if not isinstance(completions, list) or len(completions) < 2:
        raise UserError(f"{location(path, number, 'completions')} must be a list of at least 2 completions")
    completions = [_completion(path, number, {f"completions[{i}]": value}, f"completions[{i}]", prompt)
                   for i, value in enumerate(completions)]
    if not isinstance(ranks, list) or len(ranks) != len(completions):
        raise UserError(f"{location(path, number, 'ranking')} must be a list of {len(completions)} ranks, "
                        f"one per completion")
    if any(isinstance(r, bool) or not isinstance(r, int) for r in ranks):
        raise UserError(f"{location(path, number, 'ranking')} must hold integers (1 = best), got {ranks}")
    if sorted(ranks) != list(range(1, len(ranks) + 1)):
        tie = "ties are not allowed; " if len(set(ranks)) < len(ranks) else ""
        raise UserError(f"{location(path, number, 'ranking')}: {tie}expected each of 1..{len(ranks)} "
                        f"once, got {ranks}")
    order = tuple(int(i) for i in np.argsort(ranks))
    rewards, temperature = _ranking_annotator(path, number, record, len(completions))
    return Preference(prompt, tuple(completions), order=order, annotator_rewards=rewards,
                      annotator_temperature=temperature)


def _ranking_annotator(path, number, record, count):
    """(annotator_rewards tuple, annotator_temperature) of a simulated ranking, or (None, None)."""
    has_rewards, has_temperature = "annotator_rewards" in record, "annotator_temperature" in record
    if not has_rewards and not has_temperature:
        return None, None
    if has_rewards != has_temperature:
        missing = "annotator_temperature" if has_rewards else "annotator_rewards"
        raise UserError(f"{location(path, number, missing)} is missing (a simulated ranking needs "
                        f"annotator_rewards and annotator_temperature together)")
    rewards = record["annotator_rewards"]
    if not isinstance(rewards, list) or len(rewards) != count:
        raise UserError(f"{location(path, number, 'annotator_rewards')} must be a list of {count} numbers, "
                        f"one per completion")
    for i, value in enumerate(rewards):
        _number(path, number, {f"annotator_rewards[{i}]": value}, f"annotator_rewards[{i}]")
    temperature = _number(path, number, record, "annotator_temperature")
    if temperature <= 0:
        raise UserError(f"{location(path, number, 'annotator_temperature')} must be positive, got {temperature}")
    return tuple(float(r) for r in rewards), float(temperature)


def _parse_rating(path, number, record, prompt):
    completion = _completion(path, number, record, "completion", prompt)
    ratings = record["rating"]
    ratings = ratings if isinstance(ratings, list) else [ratings]
    if not ratings:
        raise UserError(f"{location(path, number, 'rating')} is an empty list")
    for value in ratings:
        _number(path, number, {"rating": value}, "rating")
    return Preference(prompt, (completion,), target=float(np.mean(ratings)), weight=float(len(ratings)))


def _parse_clicks(path, number, record, prompt):
    completion = _completion(path, number, record, "completion", prompt)
    clicks = _number(path, number, record, "clicks", integer=True)
    impressions = _number(path, number, record, "impressions", integer=True)
    if impressions <= 0:
        raise UserError(f"{location(path, number, 'impressions')} must be positive, got {impressions}")
    if not 0 <= clicks <= impressions:
        raise UserError(f"{location(path, number, 'clicks')} must be between 0 and impressions "
                        f"({impressions}), got {clicks}")
    return Preference(prompt, (completion,), target=clicks / impressions, weight=float(impressions))


_PARSERS = {"pairwise": _parse_pairwise, "ranking": _parse_ranking, "rating": _parse_rating,
            "clicks": _parse_clicks}


def _merge_repeats(items):
    """Ratings or clicks given to the same (prompt, completion) on several rows: one item, with
    the targets averaged by weight and the weights added."""
    merged = {}
    for p in items:
        key = (p.prompt, p.completions)
        if key in merged:
            q = merged[key]
            weight = q.weight + p.weight
            merged[key] = Preference(p.prompt, p.completions, target=(q.target * q.weight + p.target * p.weight)
                                     / weight, weight=weight, split=q.split or p.split)
        else:
            merged[key] = p
    return list(merged.values())


def load_preferences(path, split_by="auto", role="data"):
    """PreferenceSet of the JSONL file `path`; any bad record is a UserError naming file, line, field.

    Each item gets its split (tfpref.data.splits): its record's `split` field, else `role` when it is
    "train" or "validation" (a run with --validation_data), else a hash of its prompt or of the
    record (`split_by`: "prompt", "record", or "auto" to choose from the prompts).

    Example:
        >>> data = load_preferences("pairs.jsonl")
        >>> data.kind, len(data.items), data.comparisons()[0][:3], data.split_by
    """
    kind, items = None, []
    for number, record in jsonl_records(path):
        record_kind = detect_format(path, number, record)
        if kind is None:
            kind = record_kind
        elif record_kind != kind:
            raise UserError(f"{location(path, number)}: a {record_kind} record in a {kind} file "
                            f"(one format per file)")
        prompt = _prompt(path, number, record)
        item = _PARSERS[kind](path, number, record, prompt)
        items.append(dataclasses.replace(item, split=explicit_split(path, number, record)))
    if kind is None:
        raise UserError(f"{path}: no preference records")
    if kind in ("rating", "clicks"):
        items = _merge_repeats(items)
    if split_by == "auto":
        split_by, _ = choose_split_by([p.prompt for p in items])
    items = [dataclasses.replace(p, split=record_split(p.split, p.prompt, _record_key(p), split_by, role))
             for p in items]
    return PreferenceSet(kind, items, str(path), split_by)


def _record_key(item):
    """What a split by record hashes: the prompt and the completions, so a record keeps its split
    however the file is ordered."""
    return json.dumps([prompt_key(item.prompt), [prompt_key(c) for c in item.completions]], ensure_ascii=False)


# ---- tensors ---------------------------------------------------------------------------------

def encode_completion(prompt, completion, seq_len, tokenizer=None):
    """(ids, completion_start) of BOS + the last seq_len tokens of prompt + completion.

    `tokenizer` is the model's (default: bytes); BOS is its start token, and its control tokens are
    the chat template's markers.

    A long text loses its beginning: what is judged is the completion, and its reward is read at
    its last token. The exported `reward` signature cuts the same way. A conversational prompt is
    rendered by the chat template with its generation prompt, and its completion (assistant
    messages) continues it: content and `<|end|>` (tfpref.data.chat).
    """
    tokenizer = tokenizer or ByteTokenizer()
    if is_conversation(prompt):
        if isinstance(completion, str):  # a sampled reply: one assistant message
            completion = (("assistant", completion),)
        prompt_ids, completion_ids = render(prompt, True, tokenizer), render_completion(completion, tokenizer)
    else:
        prompt_ids, completion_ids = tokenizer.encode(prompt), tokenizer.encode(completion)
    text_ids = np.concatenate([prompt_ids, completion_ids])[-seq_len:]
    start = 1 + max(0, len(text_ids) - len(completion_ids))
    return np.concatenate([[tokenizer.bos_id], text_ids]).astype(np.int32), start


def encode_groups(prompts, completion_groups, seq_len, tokenizer=None):
    """Arrays for groups of completions of a prompt, each row BOS prompt completion, right-padded.

    Returns token_ids int32 [n, k, seq_len + 1], padding_mask and completion_mask bool (the same
    shape; completion_mask marks completion tokens), completion_valid bool [n, k] (groups
    shorter than the longest are padded with empty rows). `tokenizer`: the model's (default: bytes).
    """
    tokenizer = tokenizer or ByteTokenizer()
    n, k = len(prompts), max(len(g) for g in completion_groups)
    token_ids = np.full([n, k, seq_len + 1], tokenizer.pad_id, np.int32)
    padding_mask = np.zeros([n, k, seq_len + 1], bool)
    completion_mask = np.zeros([n, k, seq_len + 1], bool)
    valid = np.zeros([n, k], bool)
    for i, (prompt, group) in enumerate(zip(prompts, completion_groups)):
        for j, completion in enumerate(group):
            ids, start = encode_completion(prompt, completion, seq_len, tokenizer)
            token_ids[i, j, :len(ids)] = ids
            padding_mask[i, j, :len(ids)] = True
            completion_mask[i, j, start:len(ids)] = True
            valid[i, j] = True
    return {"token_ids": token_ids, "padding_mask": padding_mask, "completion_mask": completion_mask,
            "completion_valid": valid}


def preference_arrays(data, seq_len, pairs_only=False, pairs_per_item=DEFAULT_PAIRS_PER_ITEM, min_gap=0.0,
                      tokenizer=None):
    """{name: array} of a PreferenceSet, one row per item (or per comparison with `pairs_only`).

    Rows hold their completions best first (pairs and rankings), so index 0 is the chosen one;
    `target` and `weight` carry ratings or click-through rates, `margin` a pair's margin, and
    `annotator_p` the simulated annotator's probability (NaN when unknown): [n] for pairs, [n, k, k]
    for rankings (row i preferred to row j). `tokenizer`: the model's (default: bytes).
    """
    if pairs_only or data.kind == "pairwise":
        rows = data.comparisons(pairs_per_item, min_gap)
        arrays = encode_groups([r[0] for r in rows], [(r[1], r[2]) for r in rows], seq_len, tokenizer)
        arrays["margin"] = np.array([r[3] for r in rows], np.float32)
        arrays["annotator_p"] = np.array([np.nan if r[4] is None else r[4] for r in rows], np.float32)
        return arrays
    items = data.items
    groups = [tuple(p.completions[i] for i in p.order) if p.order else p.completions for p in items]
    arrays = encode_groups([p.prompt for p in items], groups, seq_len, tokenizer)
    arrays["target"] = np.array([0.0 if p.target is None else p.target for p in items], np.float32)
    arrays["weight"] = np.array([p.weight for p in items], np.float32)
    if data.kind == "ranking":  # [n, k, k]: P(annotator prefers row i to row j), best-first rows
        k = arrays["completion_valid"].shape[1]
        annotator_p = np.full([len(items), k, k], np.nan, np.float32)
        for n, p in enumerate(items):
            for i, better in enumerate(p.order):
                for j, worse in enumerate(p.order):
                    probability = p.preference_p(better, worse)
                    if probability is not None:
                        annotator_p[n, i, j] = probability
        arrays["annotator_p"] = annotator_p
    return arrays
