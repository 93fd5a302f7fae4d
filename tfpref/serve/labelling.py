"""The labelling queue: which item a labeller sees next, and saving what they answered.

Items already in the output file are done (a restarted server resumes where it stopped). An item
shown to one labeller is leased to them for `lease_seconds`, so two labellers at once get different
items; an item a labeller skips goes to the back of their queue. An answer is saved through a
`Journal` (appended and fsynced before it is acknowledged, once per item even if sent twice).

Example:
    >>> queue = LabellingQueue(read_items("batch.csv"), Journal("labels.jsonl", key_field="item_id"))
    >>> shown = queue.next_item("alice")
    >>> queue.submit(shown["item_id"], {"choice": 1})     # {"saved": True, "duplicate": False, ...}
"""
import threading
import time

from tfpref.errors import UserError
from tfpref.serve.label_items import label_record

DEFAULT_LEASE_SECONDS = 300.0


class LabellingQueue:
    """Args:
        items: the LabelItems to label (`tfpref.serve.label_items.read_items`).
        journal: the output `Journal`, keyed by "item_id".
        sample: callable (item) -> completions, for items whose completions are sampled (prompts alone).
        scale: the top of the rating scale (rate items).
    """

    def __init__(self, items, journal, sample=None, scale=5, lease_seconds=DEFAULT_LEASE_SECONDS, clock=time.monotonic):
        self.items = {item.item_id: item for item in items}
        self.order = list(self.items)  # the input's order, duplicates merged
        self.journal, self.sample, self.scale = journal, sample, scale
        self.lease_seconds, self.clock = lease_seconds, clock
        self._leases = {}        # item_id -> (labeller, expiry)
        self._skipped = {}       # labeller -> item ids they skipped, oldest first
        self._completions = {}   # item_id -> the completions shown (sampled ones are kept)
        self._lock = threading.Lock()
        self._done = sum(1 for item_id in self.order if item_id in journal)  # then counted as they are saved

    def progress(self):
        return {"done": self._done, "total": len(self.order)}

    def next_item(self, labeller):
        """The next item for `labeller` (a dict for the page), or None when every item is done."""
        with self._lock:
            now = self.clock()
            skipped = self._skipped.get(labeller, [])
            candidates = [i for i in self.order if i not in self.journal and i not in skipped] + \
                         [i for i in skipped if i not in self.journal]
            free = [i for i in candidates if self._leases.get(i, (labeller, 0.0))[0] == labeller
                    or self._leases[i][1] <= now]
            if not candidates:
                return None
            chosen = (free or candidates)[0]  # all leased to others: share one rather than show nothing
            self._leases[chosen] = (labeller, now + self.lease_seconds)
        item = self.items[chosen]
        completions = self._shown_completions(item)
        return {**item.public(completions), "scale": self.scale, "progress": self.progress()}

    def _shown_completions(self, item):
        if item.completions is not None:
            return item.completions
        with self._lock:
            known = self._completions.get(item.item_id)
        if known is None:
            known = tuple(self.sample(item))  # outside the lock: sampling takes a model call
            with self._lock:
                known = self._completions.setdefault(item.item_id, known)
        return known

    def skip(self, labeller, item_id):
        self._item(item_id)
        with self._lock:
            skipped = self._skipped.setdefault(labeller, [])
            if item_id in skipped:
                skipped.remove(item_id)
            skipped.append(item_id)
            self._leases.pop(item_id, None)
        return {"skipped": True, "progress": self.progress()}

    def submit(self, item_id, answer):
        """Save `answer` to the item; {"saved", "duplicate", "progress"}. Bad answers are UserErrors."""
        item = self._item(item_id)
        if item_id in self.journal:
            return {"saved": True, "duplicate": True, "progress": self.progress()}
        completions = self._shown_completions(item)
        record = label_record(item, completions, answer, self.scale)
        written = self.journal.append(record)
        with self._lock:
            self._leases.pop(item_id, None)
            self._done += written
        return {"saved": True, "duplicate": not written, "progress": self.progress()}

    def _item(self, item_id):
        if not isinstance(item_id, str) or item_id not in self.items:
            raise UserError("unknown item_id")
        return self.items[item_id]


__all__ = ["LabellingQueue", "DEFAULT_LEASE_SECONDS"]
