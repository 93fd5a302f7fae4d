"""A user scorer for tests (`--scorer user_scorer:count_x`): the fraction of 'x' in each text.

CALLS counts the texts it was asked to score, so tests can see the cache at work.
"""
import os
import threading
import time

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


class _LockedCountX:
    """`count_x` as a callable object holding a lock (as one holding a model might): the object does not pickle."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            return count_x(texts)


locked_count_x = _LockedCountX()


def process_id(texts):
    """Each text's score is the id of the process that scored it, so a test can see a pool share the work.

    Every process appends its id to the file $USER_SCORER_PIDS, then waits (at most a minute) until two
    processes have: otherwise one worker could score every text before the other one starts.
    """
    path, pid = os.environ["USER_SCORER_PIDS"], os.getpid()
    with open(path, "a+") as f:
        f.seek(0)
        if str(pid) not in f.read().split():
            f.write(f"{pid}\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(path) as f:
            if len(set(f.read().split())) >= 2:
                break
        time.sleep(0.01)
    return [float(pid)] * len(texts)


def probability_of_x(texts):
    """A classifier-like score in (0, 1): 0.9 for texts with an 'x', else 0.1; declares 0.5 as its threshold."""
    return [0.9 if "x" in text else 0.1 for text in texts]


probability_of_x.default_threshold = 0.5


def always_high(texts):
    """Every text scores 1: at the default threshold (0) no training segment is aligned."""
    return [1.0] * len(texts)


def bad_threshold(texts):
    return [0.0] * len(texts)


bad_threshold.default_threshold = "half"
