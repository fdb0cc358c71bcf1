"""The local Hugging Face cache, read through ``huggingface_hub``'s own cache API (``scan_cache_dir``).

The library knows the layout (``models--org--name/{refs,snapshots,blobs}``, revisions, refs);
we add the rules a cache written by someone else needs. ``scan_cache_dir`` opens every file under
``refs/`` to read it, and opening a FIFO blocks forever, so repos whose refs are not all small
regular files are left out before the scan (the scan runs over a folder of links to the clean
repos only). A ref must name a revision (not a path), the chosen snapshot must resolve inside its
repo, and the snapshot is the one ``refs/main`` names, else the newest. The scan is cached for a
few seconds (the page asks for the list on every load) and keyed by the folders' mtimes.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huggingface_hub import CachedRevisionInfo

REF_CAP = 4096
CACHE_S = 10.0
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_lock = threading.Lock()
_cached: dict[str, tuple[float, tuple[object, ...], list[CachedModel]]] = {}


@dataclass(frozen=True)
class CachedModel:
    name: str  # "org/name"
    snapshot: Path  # the real snapshot folder (inside the cache)
    revision: str


def inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _refs_safe(repo: Path) -> bool:
    """Every file under ``refs/`` is a small regular file inside the repo (no FIFO, device, escape)."""
    refs = repo / "refs"
    if not os.path.lexists(refs):
        return True
    try:
        for dirpath, dirnames, filenames in os.walk(refs, followlinks=False):
            for name in dirnames + filenames:
                entry = Path(dirpath) / name
                st = os.stat(entry)  # follows links: the target is what scan_cache_dir would open
                if stat.S_ISDIR(st.st_mode) and not entry.is_symlink():
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size > REF_CAP or not inside(entry, repo):
                    return False
    except OSError:
        return False
    return True


def _repos(cache: Path) -> list[Path]:
    try:
        children = sorted(p for p in cache.iterdir() if p.name.startswith("models--"))
    except OSError:
        return []
    out = []
    for repo in children:
        try:
            if repo.is_dir() and inside(repo, cache) and (repo / "snapshots").is_dir():
                out.append(repo)
        except OSError:
            continue
    return out


def _signature(cache: Path, repos: list[Path]) -> tuple[object, ...]:
    marks: list[object] = []
    for path in [cache, *repos, *(r / "refs" for r in repos), *(r / "snapshots" for r in repos)]:
        try:
            marks.append((str(path), os.stat(path).st_mtime_ns))
        except OSError:
            marks.append((str(path), None))
    return tuple(marks)


def _scan(cache: Path, repos: list[Path]) -> list[CachedModel]:
    from huggingface_hub import scan_cache_dir

    clean = [r for r in repos if _refs_safe(r)]
    if not clean:
        return []
    with tempfile.TemporaryDirectory(prefix="mactuner-hf-") as view:
        for repo in clean:  # the scan sees only the clean repos (through links)
            os.symlink(repo, Path(view) / repo.name)
        info = scan_cache_dir(view)
    found = []
    for repo_info in info.repos:
        if repo_info.repo_type != "model":
            continue
        real_repo = cache / repo_info.repo_path.name
        chosen = _choose(list(repo_info.revisions))
        if chosen is None or not _REVISION.fullmatch(chosen.commit_hash):
            continue
        snapshot = real_repo / "snapshots" / chosen.commit_hash
        if snapshot.is_dir() and inside(snapshot, real_repo):
            found.append(CachedModel(repo_info.repo_id, snapshot, chosen.commit_hash))
    return sorted(found, key=lambda m: m.name)


def _choose(revisions: list[CachedRevisionInfo]) -> CachedRevisionInfo | None:
    """The revision ``refs/main`` names, else the most recently modified one."""
    for rev in revisions:
        if "main" in rev.refs:
            return rev
    return max(revisions, key=lambda r: r.last_modified, default=None)


def cached_models(cache: Path) -> list[CachedModel]:
    """Models in the HF cache at ``cache`` that are safe to offer, as ``org/name``."""
    if not cache.is_dir():
        return []
    repos = _repos(cache)
    key, now = str(cache), time.monotonic()
    signature = _signature(cache, repos)
    with _lock:
        hit = _cached.get(key)
        if hit is not None and now - hit[0] < CACHE_S and hit[1] == signature:
            return hit[2]
    try:
        models = _scan(cache, repos)
    except Exception:  # a cache the library cannot read offers nothing, never breaks the list
        models = []
    with _lock:
        _cached[key] = (now, signature, models)
    return models
