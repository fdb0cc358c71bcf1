"""The model folders' version, so an open page hears of a new checkpoint without a refresh.

A training run writes ``checkpoint-1500`` while the page is open: the server's watcher (one per
server, for its whole life) fingerprints the roots every ``CHECK_EVERY_S`` (stats only, the same
fingerprint the list's cache keys on) and publishes a snapshot when it changed. Every snapshot
carries ``catalog.version``; a page that sees a new version asks ``GET /api/models`` again. The
version is a hash of the fingerprint, so servers watching the same folders agree on it.
"""

from __future__ import annotations

import hashlib
import threading

from loader.catalog.cache import fingerprint

CHECK_EVERY_S = 2.0  # the watcher looks this often (``web/watcher.py``)
_lock = threading.Lock()
_version = ""


def catalog_version() -> str:
    """The last version seen ("" before the first check): cheap, read by every snapshot."""
    return _version


def catalog_check() -> bool:
    """Fingerprint the roots now; True when they changed since the last check (not on the first)."""
    global _version
    new = hashlib.sha1(repr(fingerprint()).encode(), usedforsecurity=False).hexdigest()[:16]
    with _lock:
        changed, _version = bool(_version) and new != _version, new
    return changed
