"""The A/B test's impressions and clicks: a durable event journal and tfpref's clicks format.

Every completion served to a visitor is an impression, and a click on it is an event that can come
later. Both are appended to a `Journal` (`<stem>.events.jsonl`, fsynced before the visitor is
answered), the record of truth. From it, `<stem>.jsonl` is rewritten (atomically: a reader never sees
half a file) in tfpref's clicks format, one record per impression:
    {"prompt", "completion", "clicks": 0 or 1, "impressions": 1, "arm", "impression_id"}
which `train.py --objective reward_model --data <stem>.jsonl` reads as it is (rows repeating a
prompt and completion are merged). A second click on one impression counts once.

Example:
    >>> log = ClickLog("ab_clicks.jsonl")
    >>> impression = log.impression("A", "Write a headline", "Cats rule")
    >>> log.click(impression)      # True; again: False
    >>> log.counts()               # {"A": (1, 1), "B": (0, 0)}
"""
import json
import os
import secrets
import tempfile
import threading

from tfpref.errors import UserError
from tfpref.serve.journal import Journal

ARMS = ("A", "B")


class ClickLog:
    def __init__(self, path):
        self.path = path
        stem = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
        self.events = Journal(f"{stem}.events.jsonl", key_field="key")
        self._lock = threading.Lock()
        self._impressions, self._clicked = {}, set()
        for event in self.events.records():
            self._apply(event)
        self._write_clicks_file()

    def _apply(self, event):
        if event.get("event") == "impression":
            self._impressions[event["impression_id"]] = event
        elif event.get("event") == "click":
            self._clicked.add(event["impression_id"])

    def impression(self, arm, prompt, completion, model=""):
        """Log that `completion` (from `arm`'s model) was shown for `prompt`; returns its id."""
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}")
        impression_id = secrets.token_hex(8)
        event = {"event": "impression", "key": f"impression:{impression_id}", "impression_id": impression_id,
                 "arm": arm, "prompt": prompt, "completion": completion, "model": model}
        self.events.append(event)
        with self._lock:
            self._apply(event)
            self._write_clicks_file()
        return impression_id

    def click(self, impression_id):
        """Log a click on the impression; True, or False if it was clicked already."""
        with self._lock:
            known = isinstance(impression_id, str) and impression_id in self._impressions
        if not known:
            raise UserError("unknown impression_id")
        written = self.events.append({"event": "click", "key": f"click:{impression_id}",
                                      "impression_id": impression_id})
        if written:
            with self._lock:
                self._apply({"event": "click", "impression_id": impression_id})
                self._write_clicks_file()
        return written

    def counts(self):
        """{arm: (impressions, clicks)} for both arms."""
        with self._lock:
            counts = {arm: [0, 0] for arm in ARMS}
            for impression_id, event in self._impressions.items():
                counts[event["arm"]][0] += 1
                counts[event["arm"]][1] += impression_id in self._clicked
        return {arm: tuple(values) for arm, values in counts.items()}

    def _write_clicks_file(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False,
                                         prefix=".clicks-", suffix=".tmp") as f:
            for impression_id, event in self._impressions.items():
                record = {"prompt": event["prompt"], "completion": event["completion"],
                          "clicks": int(impression_id in self._clicked), "impressions": 1,
                          "arm": event["arm"], "impression_id": impression_id}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(f.name, self.path)


__all__ = ["ClickLog", "ARMS"]
