"""In the model host: how much memory each listed model needs, by the load's own preflight.

The picker asks for every model at once; each estimate is the load's preflight (safe reads,
headers, the meta skeleton compared with the checkpoint, an adapter over its base) and the
load's own ``fit.need_bytes``, so the hint and the load's refusal cannot disagree. A preflight
costs tens of milliseconds (the skeleton), so each answer is kept per (the request, the files of
the folder and of an adapter's base: names, mtimes, sizes): asking again costs a few ``stat``s.
The free memory is read afresh for every ask. A load or a generation arriving stops a running
ask between two models (``stop``): the user's click comes first.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loader.pipeline import device as devices
from loader.pipeline import fit
from loader.pipeline.errors import LoadError
from loader.pipeline.i18n import gettext_noop, parts
from loader.pipeline.request import LoadRequest

CACHE_ENTRIES = 4096
MAX_FOLDER_ENTRIES = 2000
FLUSH_S = 0.25  # a partial answer at least this often, so a first ask over many models shows progress


def _folder_key(path: Path) -> tuple[Any, ...]:
    """What changes when a checkpoint is rewritten: each entry's name, mtime and size (links
    followed: an HF snapshot's files are links to its blobs)."""
    entries: list[tuple[Any, ...]] = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                if len(entries) >= MAX_FOLDER_ENTRIES:
                    break
                try:
                    st = entry.stat()
                    entries.append((entry.name, st.st_mtime_ns, st.st_size))
                except OSError:
                    entries.append((entry.name,))
    except OSError as exc:
        return (type(exc).__name__,)
    return tuple(sorted(entries))


def _error(message: str, code: str) -> dict[str, Any]:
    template, params = parts(message)
    return {"code": code, "message": str(message), "template": template, "params": params}


class Estimator:
    """Each model's need in bytes (or why it cannot be said), kept while its files stay the same."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._kept: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    def need(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``{"need": bytes}`` or ``{"error": {code, message, template, params}}`` for one load spec."""
        request = LoadRequest.from_spec(spec)
        bases = sorted((spec.get("bases") or {}).values())
        key = (json.dumps(spec, sort_keys=True), _folder_key(request.path), *map(_folder_key, map(Path, bases)))
        if (kept := self._kept.get(key)) is not None:
            self._kept.move_to_end(key)
            return kept
        from loader.pipeline.preflight import preflight
        from loader.pipeline.slot import for_device

        try:
            info = preflight(request)
            answer: dict[str, Any] = {"need": fit.need_bytes(info, for_device(request, info).dtype)}
        except LoadError as exc:  # what the load would refuse it for, in the load's words
            answer = {"error": _error(exc.user_message, exc.code)}
        except Exception as exc:  # an exotic checkpoint the load would fail on: said, never raised
            answer = {
                "error": _error(gettext_noop("메모리를 계산하지 못했습니다: {why}", why=repr(exc)[:200]), "internal")
            }
        self._kept[key] = answer
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)
        return answer


def estimate(
    estimator: Estimator, ask: dict[str, Any], loaded: Any, send: Callable[[dict[str, Any]], None],
    stop: threading.Event,
) -> None:  # fmt: skip
    """Answer one ask (``{device, dtype, allow_remote_code, models: [{name, path, bases}]}``) in
    frames of ``{target, available, freed, results: {name: need or error}, done}``."""
    device, dtype = str(ask.get("device", "auto")), str(ask.get("dtype", "auto"))
    try:
        devices.validate_options(device, dtype)
        target = devices.resolve_device(device)
        head = {"target": target, "available": fit.room_bytes(target, loaded), "freed": fit.freed_bytes(target, loaded)}
    except LoadError as exc:  # the device cannot be used here (a CPU-only torch on a GPU machine)
        send({"results": {}, "done": True, "error": _error(exc.user_message, exc.code)})
        return
    results: dict[str, Any] = {}
    flushed = time.monotonic()
    for model in ask.get("models") or []:
        if stop.is_set():
            break
        name = str(model["name"])
        spec = {
            "path": str(model["path"]), "bases": model.get("bases") or {}, "device": device, "dtype": dtype,
            "allow_remote_code": bool(ask.get("allow_remote_code")), "name": name,
        }  # fmt: skip
        results[name] = estimator.need(spec)
        if time.monotonic() - flushed >= FLUSH_S:
            send({**head, "results": results, "done": False})
            results, flushed = {}, time.monotonic()
    send({**head, "results": results, "done": True, "stopped": stop.is_set()})
