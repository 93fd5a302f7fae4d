"""A preference task anyone can make offline, with a known answer: for tests, benchmarks and a first
try of the pipeline on data shaped like real human judgements.

Each record judges two six-word texts: the one with more words from WORDS wins, except for a
`noise` fraction of flipped labels (raters disagree). Prompts are empty by default (the judgement
is about the texts themselves), and records carry extra fields of every type, as real data does.

Example:
    >>> records = word_preference_pairs(1000, seed=0, noise=0.1)
    >>> records[0]["prompt"], sorted(records[0])[:3]
    ('', ['chosen', 'chosen_id', 'chosen_rating'])
"""
import numpy as np

WORDS = ("good", "great", "fine", "nice")
FILLER = ("table", "river", "stone", "cloud", "paper", "train", "green", "metal")
TEXT_WORDS = 6


def word_count_text(rng):
    """(a six-word text, how many of its words are in WORDS)."""
    good = int(rng.integers(0, 5))
    words = list(rng.choice(WORDS, good)) + list(rng.choice(FILLER, TEXT_WORDS - good))
    rng.shuffle(words)
    return " ".join(words), good


def word_preference_pairs(count, seed, noise=0.1, prompt=""):
    """`count` pairwise records (TRL's fields plus extra ones) of the task in the module docstring."""
    rng = np.random.default_rng(seed)
    records = []
    while len(records) < count:
        (first, a), (second, b) = word_count_text(rng), word_count_text(rng)
        if a == b:
            continue
        (chosen, better), (rejected, worse) = sorted([(first, a), (second, b)], key=lambda t: -t[1])
        if rng.random() < noise:
            (chosen, better), (rejected, worse) = (rejected, worse), (chosen, better)
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                        "source": ("web", "forum")[len(records) % 2], "chosen_rating": float(better),
                        "rejected_rating": float(worse), "chosen_id": str(len(records)),
                        "meta": {"rater": {"id": int(rng.integers(100)), "tags": ["a", "b"]}},
                        "rater_scores": [1, 2, 3]})
    return records
