"""The local Hugging Face cache, read through ``huggingface_hub``'s own cache API (``scan_cache_dir``).

The library knows the layout (``models--org--name/{refs,snapshots,blobs}``, revisions, refs);
we add the rules a cache written by someone else needs. ``scan_cache_dir`` opens every file under
``refs/`` to read it, and opening a FIFO blocks forever, so repos whose refs are not all small
regular files are refused before the scan. The scan runs repo by repo (over a folder holding one
link at a time): one repo the library cannot read (snapshots linking to each other) is listed
with its problem and never hides the others. A ref must name a revision (not a path), the chosen snapshot must resolve inside its
repo, and the snapshot is the one ``refs/main`` names, else the newest. The scan is cached for a
few seconds (the page asks for the list on every load) and keyed by the folders' mtimes.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loader.pipeline.i18n import gettext_noop

if TYPE_CHECKING:
    from huggingface_hub import CachedRevisionInfo, HFCacheInfo

REF_CAP = 4096
CACHE_S = 10.0
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_lock = threading.Lock()
_cached: dict[str, tuple[float, tuple[object, ...], list[CachedModel]]] = {}


@dataclass(frozen=True)
class CachedModel:
    name: str  # "org/name"
    snapshot: Path  # the real snapshot folder (inside the cache); the repo folder when it has a problem
    revision: str
    problem: str | None = None  # why this repo cannot be offered (a ``Msg``: said in each language)


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


def _repo_id(repo: Path) -> str:
    """``models--org--name`` → ``org/name``, as the library names it."""
    return repo.name.removeprefix("models--").replace("--", "/")


def _broken(repo: Path, why: str) -> CachedModel:
    return CachedModel(_repo_id(repo), repo, "", problem=why)


def _scan(cache: Path, repos: list[Path]) -> list[CachedModel]:
    from huggingface_hub import scan_cache_dir

    found = []
    with tempfile.TemporaryDirectory(prefix="mactuner-hf-") as view:
        for repo in repos:
            if not _refs_safe(repo):
                found.append(_broken(repo, gettext_noop("HF 캐시 저장소의 refs/에 일반 파일이 아닌 항목이 있습니다")))
                continue
            link = Path(view) / repo.name  # the library reads the repo's name from its folder
            try:
                os.symlink(repo, link)
                info = scan_cache_dir(view)
            except Exception as exc:  # a link cycle, an unreadable folder: this repo only
                found.append(
                    _broken(repo, gettext_noop("HF 캐시 저장소를 읽을 수 없습니다: {name}", name=type(exc).__name__))
                )
                continue
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(link)
            found += _chosen(repo, info)
    return sorted(found, key=lambda m: m.name)


def _chosen(real_repo: Path, info: HFCacheInfo) -> list[CachedModel]:
    """The repo's snapshot to offer, or why there is none."""
    if info.warnings and not info.repos:
        return [
            _broken(
                real_repo, gettext_noop("HF 캐시 저장소가 손상되었습니다: {value}", value=str(info.warnings[0])[:160])
            )
        ]
    out = []
    for repo_info in info.repos:
        if repo_info.repo_type != "model":
            continue
        chosen = _choose(list(repo_info.revisions))
        if chosen is None or not _REVISION.fullmatch(chosen.commit_hash):
            out.append(_broken(real_repo, gettext_noop("HF 캐시 저장소에 받은 스냅샷이 없습니다")))
            continue
        snapshot = real_repo / "snapshots" / chosen.commit_hash
        if snapshot.is_dir() and inside(snapshot, real_repo):
            out.append(CachedModel(repo_info.repo_id, snapshot, chosen.commit_hash))
        else:
            out.append(_broken(real_repo, gettext_noop("HF 캐시 스냅샷이 저장소 밖을 가리킵니다")))
    return out


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
    except Exception:  # no temporary folder, no huggingface_hub: the cache offers nothing, the list stays
        models = []
    with _lock:
        _cached[key] = (now, signature, models)
    return models
