"""Which version of a model is served: TensorFlow Serving's version policy "latest".

A model's export base holds one directory per version, named by its number (tfpref's export writes
`<run>/export/<step>/`). The server loads the highest version at start, then a background thread
looks at the base every `poll_seconds` and, when a higher version has appeared, loads it and swaps
it in: requests arriving after the swap go to the new version, requests already queued or running
finish on the old one, whose worker then stops. Only the served version is available; there is no
rollback to a lower one while the server runs (a version directory that is removed keeps being
served from memory until a higher one appears: tfpref's export replaces an existing step's directory
in place, and the old files are gone for the seconds that takes).

A version directory appears whole: tfpref's export writes `.partial-<step>` beside it and renames
it, and only names made of digits, holding a saved_model.pb, count as versions. A version that
fails to load is logged and skipped (the served one stays) until a higher one appears.

Example:
    >>> model = VersionedModel("tfpref", "logs/transformer-conditional", settings)
    >>> model.current.version
    1500
    >>> model.start_polling()
"""
import logging
import os
import re
import threading

from tfpref.errors import UserError
from tfpref.serve.servable import Servable

log = logging.getLogger("tfpref.serve")

# A run directory's export base (tfpref.training.export.EXPORT_DIR; not imported from there, which
# would load the whole training stack into the server).
EXPORT_DIR = "export"
_VERSION = re.compile(r"[0-9]+")


def available_versions(base):
    """The version numbers under the export base `base`, lowest first."""
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return sorted(int(name) for name in names
                  if _VERSION.fullmatch(name) and os.path.isfile(os.path.join(base, name, "saved_model.pb")))


def export_base(directory):
    """The export base of `directory`: a run directory's export/, or `directory` itself when it
    holds version directories. Raises UserError naming the directory if it holds no version."""
    if not os.path.isdir(directory):
        raise UserError(f"{directory}: no such directory (give a run directory or an export base)")
    base = os.path.join(directory, EXPORT_DIR)
    if not os.path.isdir(base) and available_versions(directory):
        base = directory
    if not available_versions(base):
        raise UserError(f"{directory}: no exported model (no <version>/saved_model.pb in {base}; export a run with "
                        f"`tfpref evaluate --model_dir RUN --export`)")
    return base


class VersionedModel:
    """A model served by name: the `Servable` of its latest version, replaced when a higher one appears.

    Args:
        name: the name it is served under (/v1/models/NAME).
        directory: a run directory or an export base (`export_base`).
        settings: the ServeSettings (poll_seconds, and the batching limits of each version).
    """

    def __init__(self, name, directory, settings):
        self.name, self.settings = name, settings
        self.base = export_base(directory)
        self._failed = set()
        self._stop = threading.Event()
        self._poller = None
        self.current = self._load(available_versions(self.base)[-1])

    def _load(self, version):
        path = os.path.join(self.base, str(version))
        servable = Servable(self.name, path, version, self.settings)
        log.info("model %s: loaded version %d from %s", self.name, version, path)
        return servable

    def poll(self):
        """Load and swap in the highest version if it is higher than the served one; True if swapped."""
        newest = max(available_versions(self.base), default=0)
        if newest <= self.current.version or newest in self._failed:
            return False
        try:
            servable = self._load(newest)
        except Exception:  # noqa: BLE001 - a broken export must not stop the server: the old version stays
            log.exception("model %s: version %d failed to load; still serving version %d", self.name, newest,
                          self.current.version)
            self._failed.add(newest)
            return False
        previous, self.current = self.current, servable  # one assignment: a request sees one or the other
        previous.retire()
        log.info("model %s: serving version %d (was %d)", self.name, newest, previous.version)
        return True

    def start_polling(self):
        self._poller = threading.Thread(target=self._poll_until_stopped, name=f"versions {self.name}", daemon=True)
        self._poller.start()

    def _poll_until_stopped(self):
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - e.g. an unreadable directory: log it, keep polling
                log.exception("model %s: looking for new versions in %s failed", self.name, self.base)

    def stop(self):
        """Stop polling, serve what is queued, and end the worker."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        self.current.retire(wait=True)


def load_models(settings):
    """{name: VersionedModel} of every model `settings` serves, each at its latest version."""
    return {name: VersionedModel(name, directory, settings) for name, directory in settings.served_models().items()}
