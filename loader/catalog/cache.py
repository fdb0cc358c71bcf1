"""The model list, described once and served from memory (stale-while-revalidate).

Describing the list stats every shard and parses every ``config.json``; a folder with a huge
config, a slow disk or a crowd reloading the page would otherwise make each ``GET /api/models``
redo that work, one after another. Here the described list is kept with a cheap fingerprint of
the two roots (their entries and each entry's ``config.json``: names, mtimes, sizes):

- same fingerprint, younger than ``FRESH_S`` → the kept list;
- same fingerprint, older → the kept list at once, and one background thread rebuilds it
  (a shard rewritten in place shows up on a later request);
- a different fingerprint (a folder added, removed, renamed, its config changed, or the roots
  themselves changed) → rebuilt before answering, so a new folder is listed at once.

However many requests arrive, they share one rebuild per fingerprint. Loads do not go through
this cache: ``POST /api/load`` asks ``catalog.find_model`` afresh.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from loader.catalog import listing as catalog

FRESH_S = 3.0
log = logging.getLogger("loader.catalog_cache")
Fingerprint = tuple[Any, ...]


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # stat never blocks on a FIFO (open would)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size)


# Files whose edits change what the list says about a folder (a Trainer's step, an adapter's base).
DESCRIBING = ("config.json", "trainer_state.json", "adapter_config.json")


def _nested_key(path: str, depth: int) -> tuple[Any, ...]:
    """One level further (``run/checkpoint-N``, ``org/name``): the files that describe each child."""
    if depth <= 0 or not os.path.isdir(path) or os.path.islink(path):
        return ()
    try:
        with os.scandir(path) as it:
            dirs = [(_stat_key(e.path) or (0, 0, 0), e.path) for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return ()
    # The 500 most recently changed (a long run's newest checkpoints, still being written); the
    # folder's own mtime above tells of any child added or removed beyond them.
    children = sorted(((path, key) for key, path in sorted(dirs, reverse=True)[:500]))
    # The child's own stat too: a file added to or removed from it (a Trainer's weights after its
    # config) changes its mtime, so the list (and an open page) hears of it.
    return tuple(
        (os.path.basename(c), key, *(_stat_key(os.path.join(c, f)) for f in DESCRIBING)) for c, key in children
    )


def _root_key(root: Path, depth: int = 1) -> tuple[Any, ...]:
    entries: list[tuple[Any, ...]] = []
    try:
        with os.scandir(root) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                entries.append(
                    (entry.name, st.st_mtime_ns, st.st_ctime_ns, _stat_key(os.path.join(entry.path, "config.json")))
                    + _nested_key(entry.path, depth)
                )
    except OSError as exc:
        return (str(root), type(exc).__name__)
    return (str(root), _stat_key(str(root)), tuple(sorted(entries)))


def fingerprint() -> Fingerprint:
    return (_root_key(Path(settings.MACTUNER_MODELS_DIR)), _root_key(Path(settings.MACTUNER_HF_CACHE), depth=0))


class _Build:
    def __init__(self, key: Fingerprint) -> None:
        self.key, self.started, self.done = key, time.monotonic(), threading.Event()


class CatalogCache:
    def __init__(self, fresh_s: float = FRESH_S) -> None:
        self.fresh_s = fresh_s
        self._lock = threading.Lock()
        self._described: list[dict[str, Any]] = []
        self._entries: list[catalog.ModelEntry] = []  # what ``_described`` was described from
        self._key: Fingerprint | None = None
        self._started = 0.0  # when the kept list's build began
        self._builds: dict[Fingerprint, _Build] = {}

    def described(self) -> list[dict[str, Any]]:
        """The list as ``GET /api/models`` shows it; waits only when the folders changed."""
        return self.listed()[0]

    def listed(self) -> tuple[list[dict[str, Any]], list[catalog.ModelEntry]]:
        """``described()`` and the entries (names, folders) it was described from, kept together:
        the fit hints need each listed model's folder without listing the folders again."""
        key = fingerprint()
        with self._lock:
            same = key == self._key
            if same and time.monotonic() - self._started <= self.fresh_s:
                return self._described, self._entries
            build = self._builds.get(key)
            mine = build is None
            if build is None:
                build = self._builds[key] = _Build(key)
            kept = self._described, self._entries
        if same:
            if mine:
                threading.Thread(target=self._rebuild, args=(build,), name="loader-catalog", daemon=True).start()
            return kept
        if mine:
            self._rebuild(build)
        else:
            build.done.wait()
        with self._lock:
            return self._described, self._entries

    def _rebuild(self, build: _Build) -> None:
        try:
            entries = catalog.list_models()
            described = catalog.describe_all(entries)
            with self._lock:
                if build.started >= self._started:  # an older build finishing late keeps nothing
                    self._described, self._entries = described, entries
                    self._key, self._started = build.key, build.started
        except Exception:  # the list keeps its last good value; the next request tries again
            log.exception("describing the model list failed")
        finally:
            with self._lock:
                self._builds.pop(build.key, None)
            build.done.set()


cache = CatalogCache()
