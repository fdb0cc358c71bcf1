"""The models the dashboard offers: folders under the models root and local HF cache snapshots.

The web API loads by a name from this list only, never by a raw path, so ``..``, absolute
paths and symlinks that escape the models root (or an HF-cache repo) cannot name anything
outside it. One bad folder never breaks the list: a folder that cannot be described is listed
with a short ``problem`` (and the load refuses it with the typed error), and describing one
reads at most the capped ``config.json``/``adapter_config.json``/``trainer_state.json`` through
``safefs`` (no FIFO, device or escape). What users really keep is offered: model folders
(safetensors or ``pytorch_model.bin``), Trainer runs one level down (``run/checkpoint-500``, with
the step), PEFT adapters (with their base), and GGUF/MLX/ONNX/… folders with the reason they
do not load here.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from loader.catalog.hf_cache import cached_models, inside
from loader.pipeline.errors import LoadError
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect import formats
from loader.pipeline.inspect.adapters import read_adapter_config, summary
from loader.pipeline.inspect.safefs import CONFIG_CAP, JsonUnreadable, folder_root, read_json, resolve_inside
from loader.pipeline.names import name_view
from loader.pipeline.preflight import check_config_fields

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHTS = {
    formats.SAFETENSORS: lambda n: n.endswith(".safetensors") and not n.startswith("adapter_model"),
    formats.BIN: lambda n: n.startswith("pytorch_model") and n.endswith(".bin"),
    formats.ADAPTER: lambda n: n in ("adapter_model.safetensors", "adapter_model.bin"),
    formats.GGUF: lambda n: n.endswith(".gguf"),
    formats.MLX: lambda n: n.endswith((".safetensors", ".npz")),
    formats.ONNX: lambda n: n.endswith(".onnx"),
    formats.TF: lambda n: n == "tf_model.h5",
    formats.FLAX: lambda n: n == "flax_model.msgpack",
    formats.PTH: lambda n: n.startswith("consolidated.") and n.endswith(".pth"),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    source: str  # "local" | "hf-cache"
    problem: str | None = None  # known before describing: a folder with no model, a broken cache repo

    def describe(self, catalog: list[ModelEntry] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "source": self.source, "size_bytes": 0, "shards": 0, "architecture": None,
            "model_type": None, "problem": None, "format": None, "kind": "model", "step": None, "adapter": None,
        }  # fmt: skip
        # What people read (deceptive characters as ⟨U+XXXX⟩, and why); "name" stays the key that loads.
        out["display_name"], out["name_warning"] = name_view(self.name)
        if self.problem is not None:
            out["problem"] = self.problem
            return out
        try:
            if (m := _CHECKPOINT.fullmatch(self.path.name)) is not None:
                out["kind"], out["step"] = "checkpoint", _step(self.path, int(m.group(1)))
            is_file = self.path.suffix == ".gguf" and not _is_dir(self.path)
            root = folder_root(self.path.parent if is_file else self.path)
            config = None if is_file else _config(self.path, root)
            kind = out["format"] = formats.detect(self.path, config if isinstance(config, dict) else None)
            out["size_bytes"], out["shards"] = _weight_sizes(self.path, root, kind, is_file)
            if kind == formats.ADAPTER:
                out["kind"] = "adapter" if out["kind"] == "model" else out["kind"]
                out["problem"] = _describe_adapter(self.path, root, out, catalog)
            elif formats.advice(kind):
                out["problem"] = formats.advice(kind, self.name)
            else:
                out["problem"] = _describe_config(config, out)
                if out["problem"] is None and not out["shards"]:
                    out["problem"] = gettext_noop("가중치 파일(.safetensors 또는 pytorch_model.bin)이 없습니다")
        except Exception as exc:  # never one folder's fault for the whole list
            out["problem"] = gettext_noop("폴더를 읽을 수 없습니다 ({name})", name=type(exc).__name__)
        return out


def _step(path: Path, from_name: int) -> int:
    """``global_step`` from Trainer's ``trainer_state.json``; the folder name's number otherwise."""
    try:
        state = read_json(path / "trainer_state.json", folder_root(path), CONFIG_CAP)
    except (OSError, LoadError, JsonUnreadable):
        return from_name
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if type(step) is int else from_name


def _weight_sizes(path: Path, root: Path, kind: str, is_file: bool) -> tuple[int, int]:
    files = [path] if is_file else [p for p in _children(path) if _WEIGHTS.get(kind, lambda n: False)(p.name)]
    size = count = 0
    for entry in files:
        try:
            st = os.stat(resolve_inside(entry, root))  # stat never blocks on a FIFO; open would
        except (OSError, LoadError):
            continue
        if stat.S_ISREG(st.st_mode):
            size, count = size + st.st_size, count + 1
    return size, count


def _config(path: Path, root: Path) -> Any:
    """The parsed config.json, or the problem (a string) it has."""
    if not os.path.lexists(path / "config.json") and formats.offered(path):
        return None
    try:
        return read_json(path / "config.json", root, CONFIG_CAP)
    except LoadError as exc:
        return exc.user_message
    except PermissionError:
        return gettext_noop("config.json을 읽을 수 없습니다(권한)")
    except (OSError, JsonUnreadable) as exc:
        return gettext_noop("config.json을 읽을 수 없습니다: {value}", value=str(exc)[:160])


def _describe_config(config: Any, out: dict[str, Any]) -> str | None:
    """Fill architecture/model_type; return why the config cannot be used, or None."""
    if isinstance(config, str):
        return config
    if not isinstance(config, dict):
        return gettext_noop("config.json 형식이 잘못되었습니다(객체가 아님)")
    try:
        check_config_fields(config)
    except LoadError as exc:
        return exc.user_message
    archs, model_type = config.get("architectures"), config.get("model_type")
    out["architecture"] = archs[0] if archs else None
    out["model_type"] = model_type
    return None


def _describe_adapter(path: Path, root: Path, out: dict[str, Any], catalog: list[ModelEntry] | None) -> str | None:
    try:
        config = read_adapter_config(path, root)
    except LoadError as exc:
        return exc.user_message
    out["adapter"] = summary(config)
    base = config.get("base_model_name_or_path")
    base_path = resolve_base(base, catalog) if isinstance(base, str) else None
    if base_path is None and isinstance(base, str) and Path(base).is_absolute() and _is_dir(Path(base)):
        return gettext_noop(
            "기본 모델이 모델 폴더와 Hugging Face 캐시 밖에 있습니다: {str} (MACTUNER_BASE_DIRS로 추가할 수 있습니다)",
            str=base[:200],
        )
    if base_path is None:
        return gettext_noop("기본 모델을 찾을 수 없습니다: {str}", str=str(base)[:200])
    base_entry = next((e for e in (list_models() if catalog is None else catalog) if e.path == base_path), None)
    if base_entry is not None:  # never an adapter: resolve_base skips them, so this cannot recurse
        base_desc = base_entry.describe()
        out["architecture"], out["model_type"] = base_desc["architecture"], base_desc["model_type"]
    return None


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


def _is_model(folder: Path, unreadable_counts: bool = True) -> bool:
    """A folder with config.json (of any kind: ``describe`` says what is wrong with it), an adapter,
    or a format we can name; an unreadable folder is offered too, so loading it says why."""
    try:
        if os.path.lexists(folder / "config.json") or formats.offered(folder):
            return True
        return unreadable_counts and not os.access(folder, os.R_OK | os.X_OK)
    except OSError:
        return unreadable_counts


def _local_models(root: Path) -> list[ModelEntry]:
    return [entry for child in _children(root) for entry in _entries_under(root, child)]


def _entries_under(root: Path, child: Path, only: str | None = None) -> Iterator[ModelEntry]:
    """What one top-level entry of the models folder lists, in order: itself, then its org/name or
    Trainer checkpoint-N folders; ``only`` looks at that one second-level name instead."""
    if not inside(child, root):
        return
    if child.suffix == ".gguf" and not _is_dir(child):  # a lone GGUF file: listed with its reason
        yield ModelEntry(child.name, child, "local")
        return
    if not _is_dir(child):
        return
    model = _is_model(child)
    if model and only is None:
        yield ModelEntry(child.name, child, "local")
    grands = _children(child) if only is None else [child / only]
    found = False
    for grand in grands:  # org/name layout, or a Trainer run's checkpoint-N folders
        if model and not _CHECKPOINT.fullmatch(grand.name):
            continue
        if _is_dir(grand) and inside(grand, root) and _is_model(grand, unreadable_counts=False):
            found = True
            yield ModelEntry(f"{child.name}/{grand.name}", grand, "local")
    if only is None and not model and not found:  # a folder the user put here for a reason: say why not
        yield ModelEntry(child.name, child, "local", problem=_not_a_model(grands))


def _not_a_model(children: list[Path]) -> str:
    if not children:
        return gettext_noop("빈 폴더입니다: 모델 파일(config.json과 가중치)이 없습니다")
    return gettext_noop("모델 폴더가 아닙니다: config.json이 없고, 하위 폴더에도 모델이 없습니다")


def _hf_cache_models(cache: Path) -> list[ModelEntry]:
    return [
        ModelEntry(m.name, m.snapshot, "hf-cache", problem=m.problem or _cache_problem(m.snapshot))
        for m in cached_models(cache)
    ]


def _cache_problem(snapshot: Path) -> str | None:
    """A snapshot with no config.json (a tokenizer-only download) is listed with why."""
    try:
        if os.path.lexists(snapshot / "config.json") or formats.offered(snapshot):
            return None
    except OSError:
        pass
    return gettext_noop("이 스냅샷에는 config.json이 없습니다(토크나이저나 일부 파일만 받은 저장소)")


def list_models() -> list[ModelEntry]:
    seen: dict[str, ModelEntry] = {}
    for entry in _local_models(Path(settings.MACTUNER_MODELS_DIR)) + _hf_cache_models(Path(settings.MACTUNER_HF_CACHE)):
        seen.setdefault(entry.name, entry)
    return list(seen.values())


def describe_all(entries: list[ModelEntry] | None = None) -> list[dict[str, Any]]:
    """What the list says of each of ``entries`` (by default, every model listed now)."""
    entries = list_models() if entries is None else entries
    described = [entry.describe(entries) for entry in entries]
    mark_newest(described)
    return described


def mark_newest(described: list[dict[str, Any]]) -> None:
    """``newest``: the highest-step checkpoint of each training run (the one a fine-tuner usually
    wants next), told apart in the picker; a run's checkpoints share the folder before their name."""
    best: dict[str, dict[str, Any]] = {}
    for info in described:
        info["newest"] = False
        if info["kind"] == "checkpoint" and info["step"] is not None and "/" in info["name"]:
            run = info["name"].rsplit("/", 1)[0]
            if run not in best or info["step"] > best[run]["step"]:
                best[run] = info
    for info in best.values():
        info["newest"] = True


def find_model(name: str) -> ModelEntry | None:
    """The listed model called ``name``, found without listing the whole models folder (a click
    would pay ~10 ms more with 300 entries there): the same rules as ``list_models``, applied to
    the one folder the name points at, then the HF cache (a local name wins, as in the list)."""
    parts = name.split("/")
    root = Path(settings.MACTUNER_MODELS_DIR)
    # Each part as the folder spells it (not a case-insensitive or normalizing file system's match).
    if len(parts) <= 2 and all(p and not p.startswith(".") for p in parts) and _spelled(root, parts):
        for entry in _entries_under(root, root / parts[0], parts[1] if len(parts) == 2 else None):
            if entry.name == name:
                return entry  # a model folder's own entry comes first: its checkpoints are not looked at
    return _by_name(name, _hf_cache_models(Path(settings.MACTUNER_HF_CACHE)))


def _spelled(root: Path, parts: list[str]) -> bool:
    try:
        return parts[0] in os.listdir(root) and (len(parts) == 1 or parts[1] in os.listdir(root / parts[0]))
    except (OSError, ValueError):
        return False


def _by_name(name: str, catalog: list[ModelEntry] | None) -> ModelEntry | None:
    for entry in list_models() if catalog is None else catalog:
        if entry.name == name:
            return entry
    return None


def base_roots() -> list[Path]:
    """Where the web may read an adapter's base given as an absolute path."""
    return [Path(settings.MACTUNER_MODELS_DIR), Path(settings.MACTUNER_HF_CACHE), *settings.MACTUNER_BASE_DIRS]


def resolve_base(name: str, catalog: list[ModelEntry] | None = None, *, anywhere: bool = False) -> Path | None:
    """An adapter's base: a listed model by name (``org/name`` from the HF cache too), an absolute
    folder inside the roots (anywhere: the terminal's own request), or the one listed model whose
    last name part matches (``org/Llama-3`` → ``Llama-3``)."""
    entries = [e for e in (list_models() if catalog is None else catalog) if formats.detect(e.path) != formats.ADAPTER]
    for entry in entries:
        if entry.name == name:
            return entry.path
    path = Path(name)
    if path.is_absolute():
        ok = _is_dir(path) and (anywhere or any(inside(path, root) for root in base_roots()))
        return path if ok else None
    tail = name.rstrip("/").rsplit("/", 1)[-1]
    matches = [e for e in entries if e.name.rsplit("/", 1)[-1] == tail]
    return matches[0].path if len(matches) == 1 else None
