"""The models the dashboard offers: folders under the models root and local HF cache snapshots.

The web API loads by a name from this list only, never by a raw path, so ``..``, absolute
paths and symlinks that escape the models root cannot name anything outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    source: str  # "local" | "hf-cache"

    def describe(self) -> dict[str, Any]:
        shards = sorted(self.path.glob("*.safetensors"))
        size = 0
        for shard in shards:
            with contextlib.suppress(OSError):
                size += shard.stat().st_size
        architecture = model_type = None
        try:
            config = json.loads((self.path / "config.json").read_text(encoding="utf-8"))
            archs = config.get("architectures") or []
            architecture = archs[0] if archs else None
            model_type = config.get("model_type")
        except (OSError, ValueError, AttributeError):
            pass
        return {
            "name": self.name, "source": self.source, "size_bytes": size, "shards": len(shards),
            "architecture": architecture, "model_type": model_type,
        }  # fmt: skip


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def _is_model(folder: Path) -> bool:
    """A folder with config.json; an unreadable folder is offered too, so loading it says why."""
    try:
        return (folder / "config.json").is_file() or not os.access(folder, os.R_OK | os.X_OK)
    except OSError:
        return True


def _local_models(root: Path) -> list[ModelEntry]:
    found = []
    for child in _children(root):
        if not child.is_dir() or not _inside(child, root):
            continue
        if _is_model(child):
            found.append(ModelEntry(child.name, child, "local"))
            continue
        for grand in _children(child):  # org/name layout
            if grand.is_dir() and _inside(grand, root) and (grand / "config.json").is_file():
                found.append(ModelEntry(f"{child.name}/{grand.name}", grand, "local"))
    return found


def _hf_cache_models(cache: Path) -> list[ModelEntry]:
    found = []
    for repo in _children(cache):
        if not repo.name.startswith("models--"):
            continue
        snapshot = None
        try:
            ref = repo / "refs" / "main"
            if ref.is_file():
                snapshot = repo / "snapshots" / ref.read_text().strip()
            else:
                candidates = _children(repo / "snapshots")
                snapshot = candidates[-1] if candidates else None
            has_config = snapshot is not None and (snapshot / "config.json").is_file()
        except OSError:
            has_config = False
        if snapshot is not None and has_config:
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
