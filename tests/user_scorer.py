"""A user scorer for tests (`--scorer user_scorer:count_x`): the fraction of 'x' in each text.

CALLS counts the texts it was asked to score, so tests can see the cache at work.
"""
CALLS = []


def count_x(texts):
    CALLS.extend(texts)
    return [text.count("x") / max(len(text), 1) for text in texts]


def wrong_length(texts):
    return [0.0]


def not_numbers(texts):
    return ["high" for _ in texts]


def fewer_a(texts):
    """Minus the number of 'a' characters: an RL toy task (reward = -score = count of 'a')."""
    return [-float(text.count("a")) for text in texts]
