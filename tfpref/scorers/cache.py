"""Scores of training data, computed once: an on-disk cache keyed by content hash and scorer version.

The cache is one SQLite file, `$TFPREF_CACHE_DIR/scores.sqlite` (default `~/.cache/tfpref`), so
any number of runs and processes share it safely. Missing scores are computed on every core
with a progress bar; a second run on the same data reads them back in a second or two.
"""
import functools
import hashlib
import json
import multiprocessing
import os
import sqlite3

import numpy as np

KINDS = ("text", "lines")
_PARALLEL_MIN = 256  # fewer texts than this are scored in-process


def cache_path():
    root = os.environ.get("TFPREF_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tfpref")
    return os.path.join(root, "scores.sqlite")


def _key(scorer, kind, text):
    digest = hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"{scorer.name}|{scorer.version}|{kind}|{digest}"


def _compute(scorer, kind, text):
    return scorer.score_one(text) if kind == "text" else scorer.line_scores_one(text)


class ScoreCache:
    """Cached `score_one` ("text") or `line_scores_one` ("lines") results of a scorer.

    Example:
        >>> scores = ScoreCache().get(get_scorer("pep8"), "text", chunks)
    """

    def __init__(self, path=None, processes=None, show_progress=True):
        self.path = path or cache_path()
        self.processes = processes or os.cpu_count() or 1
        self.show_progress = show_progress

    def _connect(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60)
        connection.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT)")
        return connection

    def get(self, scorer, kind, texts):
        """One result per text: a float for "text", a list of floats for "lines"."""
        assert kind in KINDS, kind
        keys = [_key(scorer, kind, t) for t in texts]
        found = {}
        connection = self._connect()
        try:
            unique = list(dict.fromkeys(keys))
            for begin in range(0, len(unique), 900):  # SQLite's limit on bound parameters
                part = unique[begin:begin + 900]
                rows = connection.execute(
                    f"SELECT key, value FROM scores WHERE key IN ({','.join('?' * len(part))})", part)
                found.update((k, json.loads(v)) for k, v in rows)
        finally:
            connection.close()  # closed before scoring forks worker processes
        missing = {}
        for key, text in zip(keys, texts):
            if key not in found:
                missing.setdefault(key, text)
        if missing:
            new = dict(zip(missing, self._compute_all(scorer, kind, list(missing.values()))))
            connection = self._connect()
            try:
                with connection:  # one transaction
                    connection.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)",
                                           [(k, json.dumps(v)) for k, v in new.items()])
            finally:
                connection.close()
            found.update(new)
        return [found[k] for k in keys]

    def _compute_all(self, scorer, kind, texts):
        progress = None
        if self.show_progress and len(texts) >= _PARALLEL_MIN:
            import keras  # the scorers need no TensorFlow: it is loaded for the progress bar alone

            print(f"Scoring {len(texts)} texts with {scorer.name} (cached for later runs)", flush=True)
            progress = keras.utils.Progbar(len(texts), unit_name="text")
        if scorer.batched and kind == "text":  # a model scores a batch at once, in this process
            results = []
            for begin in range(0, len(texts), _PARALLEL_MIN):
                results += [float(s) for s in scorer.score(texts[begin:begin + _PARALLEL_MIN])]
                if progress is not None:
                    progress.update(len(results))
            return results
        work = functools.partial(_compute, scorer, kind)  # pickled, scorer and all, with every chunk sent to the pool
        if len(texts) < _PARALLEL_MIN or self.processes == 1:
            return [_with_progress(work(t), progress) for t in texts]
        results = []
        with multiprocessing.get_context("fork").Pool(self.processes) as pool:
            for result in pool.imap(work, texts, chunksize=32):
                results.append(_with_progress(result, progress))
        return results


def _with_progress(result, progress):
    if progress is not None:
        progress.add(1)
    return result


def cached_scores(scorer, kind, texts, show_progress=True):
    """`ScoreCache().get(...)`; "text" results as a float64 array."""
    values = ScoreCache(show_progress=show_progress).get(scorer, kind, texts)
    return np.asarray(values, np.float64) if kind == "text" else values
