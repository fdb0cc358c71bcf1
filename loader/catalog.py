"""The models the dashboard offers: folders under the models root and local HF cache snapshots.

The web API loads by a name from this list only, never by a raw path, so ``..``, absolute
paths and symlinks that escape the models root (or an HF-cache repo) cannot name anything
outside it. One bad folder never breaks the list: a folder that cannot be described is listed
with a short ``problem`` (and the load refuses it with the typed error), and describing one
reads at most the capped ``config.json`` through ``safefs`` (no FIFO, device or escape).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from .pipeline.errors import LoadError
from .pipeline.resolve import check_config_fields
from .pipeline.safefs import CONFIG_CAP, JsonUnreadable, folder_root, read_bytes, read_json, resolve_inside

REF_CAP = 4096
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    source: str  # "local" | "hf-cache"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "source": self.source, "size_bytes": 0, "shards": 0,
            "architecture": None, "model_type": None, "problem": None,
        }  # fmt: skip
        try:
            root = folder_root(self.path)
            out["size_bytes"], out["shards"] = _shard_sizes(self.path, root)
            out["problem"] = _describe_config(self.path, root, out)
            if out["problem"] is None and not out["shards"]:
                out["problem"] = "가중치 파일(.safetensors)이 없습니다"
        except Exception as exc:  # never one folder's fault for the whole list
            out["problem"] = f"폴더를 읽을 수 없습니다 ({type(exc).__name__})"
        return out


def _shard_sizes(path: Path, root: Path) -> tuple[int, int]:
    size = count = 0
    for entry in _children(path):
        if not entry.name.endswith(".safetensors"):
            continue
        try:
            st = os.stat(resolve_inside(entry, root))  # stat never blocks on a FIFO; open would
        except (OSError, LoadError):
            continue
        if stat.S_ISREG(st.st_mode):
            size, count = size + st.st_size, count + 1
    return size, count


def _describe_config(path: Path, root: Path, out: dict[str, Any]) -> str | None:
    """Fill architecture/model_type; return why the config cannot be used, or None."""
    try:
        config = read_json(path / "config.json", root, CONFIG_CAP)
    except LoadError as exc:
        return exc.user_message
    except PermissionError:
        return "config.json을 읽을 수 없습니다(권한)"
    except (OSError, JsonUnreadable) as exc:
        return f"config.json을 읽을 수 없습니다: {exc}"[:200]
    if not isinstance(config, dict):
        return "config.json 형식이 잘못되었습니다(객체가 아님)"
    try:
        check_config_fields(config)
    except LoadError as exc:
        return exc.user_message
    archs, model_type = config.get("architectures"), config.get("model_type")
    out["architecture"] = archs[0] if archs else None
    out["model_type"] = model_type
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def _is_model(folder: Path) -> bool:
    """A folder with config.json (of any kind: ``describe`` says what is wrong with it); an
    unreadable folder is offered too, so loading it says why."""
    try:
        return os.path.lexists(folder / "config.json") or not os.access(folder, os.R_OK | os.X_OK)
    except OSError:
        return True


def _local_models(root: Path) -> list[ModelEntry]:
    found = []
    for child in _children(root):
        if not _is_dir(child) or not _inside(child, root):
            continue
        if _is_model(child):
            found.append(ModelEntry(child.name, child, "local"))
            continue
        for grand in _children(child):  # org/name layout
            if _is_dir(grand) and _inside(grand, root) and os.path.lexists(grand / "config.json"):
                found.append(ModelEntry(f"{child.name}/{grand.name}", grand, "local"))
    return found


def _snapshot(repo: Path) -> Path | None:
    """The snapshot ``refs/main`` names (or the last one), only if it stays inside the repo."""
    ref = repo / "refs" / "main"
    if os.path.lexists(ref):
        try:
            revision = read_bytes(ref, repo.resolve(), REF_CAP).decode("ascii").strip()
        except (OSError, LoadError, UnicodeDecodeError):
            return None
        if not _REVISION.fullmatch(revision):
            return None  # "../../..", a path, or garbage: not a revision
        candidates = [repo / "snapshots" / revision]
    else:
        candidates = _children(repo / "snapshots")[-1:]
    for snapshot in candidates:
        if _is_dir(snapshot) and _inside(snapshot, repo) and os.path.lexists(snapshot / "config.json"):
            return snapshot
    return None


def _hf_cache_models(cache: Path) -> list[ModelEntry]:
    found = []
    for repo in _children(cache):
        if not repo.name.startswith("models--") or not _is_dir(repo) or not _inside(repo, cache):
            continue
        snapshot = _snapshot(repo)
        if snapshot is not None:
            name = repo.name.removeprefix("models--").replace("--", "/")
            found.append(ModelEntry(name, snapshot, "hf-cache"))
    return found


def list_models() -> list[ModelEntry]:
    seen: dict[str, ModelEntry] = {}
    for entry in _local_models(Path(settings.MACTUNER_MODELS_DIR)) + _hf_cache_models(Path(settings.MACTUNER_HF_CACHE)):
        seen.setdefault(entry.name, entry)
    return list(seen.values())


def find_model(name: str) -> ModelEntry | None:
    for entry in list_models():
        if entry.name == name:
            return entry
    return None
