"""An append-only JSONL file that never loses an acknowledged record.

The labelling page and the A/B clicks both collect what people did, one JSON object a line. A
record counts as saved only once `append` has returned: the line is written whole, flushed and
fsynced first, under a lock (threads of this server) and an advisory file lock (another process
appending to the same file), so a crash (kill -9, power loss) can only lose a record nobody was told
was saved. Reopening the file drops such a torn last line (it has no newline) and reads the rest.

Example:
    >>> journal = Journal("labels.jsonl", key_field="item_id")
    >>> journal.append({"item_id": "a1", "chosen": "x", "rejected": "y"})   # True: saved
    >>> journal.append({"item_id": "a1", "chosen": "y", "rejected": "x"})   # False: already there
"""
import fcntl
import json
import os
import threading

from tfpref.errors import UserError, location


class Journal:
    """The records of the JSONL file `path` (created if missing), and appends to it.

    With `key_field`, a record whose value of that field is already in the file is not appended
    again: submitting the same item twice (a double click, a retried request) saves it once.
    """

    def __init__(self, path, key_field=None):
        self.path, self.key_field = path, key_field
        self._lock = threading.Lock()
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UserError(f"{path}: its directory does not exist")
        try:
            self._file = open(path, "a+b")  # noqa: SIM115 - held open for the server's life
        except OSError as e:
            raise UserError(f"{path}: cannot open for appending ({e.strerror or e})") from None
        self._records = self._read_and_repair()
        self._keys = {record.get(key_field) for record in self._records} if key_field else set()

    def _read_and_repair(self):
        with self._lock:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                self._file.seek(0)
                data = self._file.read()
                complete = data[:data.rfind(b"\n") + 1]
                if len(complete) < len(data):
                    # A line without its newline was being written when the process died: it was never
                    # acknowledged (append returns after the newline is on disk), so it is dropped.
                    self._file.truncate(len(complete))
                    os.fsync(self._file.fileno())
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        records = []
        for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserError(f"{location(self.path, number)}: not a JSON record ({e})") from None
            if not isinstance(record, dict):
                raise UserError(f"{location(self.path, number)}: expected a JSON object")
            records.append(record)
        return records

    def records(self):
        """Every record, in the order they were appended (a copy)."""
        with self._lock:
            return list(self._records)

    def __contains__(self, key):
        with self._lock:
            return key in self._keys

    def append(self, record):
        """Append `record` durably and return True; False (nothing written) if its key is there."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        key = record.get(self.key_field) if self.key_field else None
        with self._lock:
            if self.key_field and key in self._keys:
                return False
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                self._file.seek(0, os.SEEK_END)
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._records.append(record)
            if self.key_field:
                self._keys.add(key)
            return True

    def close(self):
        self._file.close()


__all__ = ["Journal"]
