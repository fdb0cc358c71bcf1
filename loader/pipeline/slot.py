"""One model per process: the slot that holds it, loads into it and empties it.

The lock makes "a second load while one runs" a refusal rather than a race, and the preflight
runs before the unload so a model that cannot load (or cannot fit) never costs the user the
model they already have.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
import weakref
from typing import Any

from loader.pipeline import device as devices
from loader.pipeline import fit
from loader.pipeline.errors import DoesNotFit, LoadCancelled, LoaderBusy, LoadError
from loader.pipeline.events import EventCallback
from loader.pipeline.i18n import as_note, gettext_noop
from loader.pipeline.inspect.checkpoint import CheckpointInfo
from loader.pipeline.inspect.formats import SAFETENSORS, detect
from loader.pipeline.inspect.skeleton import target_dtype
from loader.pipeline.preflight import preflight, warm_imports
from loader.pipeline.request import LoadedModel, LoadRequest
from loader.pipeline.stages import Reporter, load_checkpoint
from loader.pipeline.weights.streamed import EarlyReads


def _drop_tracebacks(error: BaseException | None) -> None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


class UnexpectedFailure(Exception):
    """An untyped error of the load, kept as its traceback text after the frames were dropped."""


def for_device(request: LoadRequest, info: CheckpointInfo) -> LoadRequest:
    """What the target device can hold, decided before the fit check: MPS gets no float64 and, before
    macOS 14, no bfloat16; ``auto`` on a Mac without MPS says why it is CPU. Notes go to metadata."""
    target = devices.target_without_torch(request.device) or devices.resolve_device(request.device)
    notes = list(request.notes)
    if target == "cpu" and request.device == "auto" and (reason := devices.mps_missing_reason()) is not None:
        notes.append(as_note(reason))
    if target == "mps":
        planned = info.skeleton.dtype if info.skeleton is not None else target_dtype(request.dtype, info.config, info)
        config_dtype = info.config.get("torch_dtype") or info.config.get("dtype")
        dtype, note = devices.mps_dtype(request.dtype, planned, config_dtype)
        if note is not None:
            notes.append(as_note(note))
        request = dataclasses.replace(request, dtype=dtype)
    return dataclasses.replace(request, notes=notes) if notes != list(request.notes) else request


class ModelSlot:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None

    @property
    def loaded(self) -> LoadedModel | None:
        return self._loaded

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def summary(self) -> dict[str, Any] | None:
        m = self._loaded
        if m is None:
            return None
        return {"name": m.name, "path": str(m.path), "device": m.device, "dtype": m.dtype, "metadata": m.metadata}

    def load(
        self, request: LoadRequest, on_event: EventCallback, cancel: threading.Event, max_bytes: int | None = None
    ) -> LoadedModel:
        lock = self._lock
        if not lock.acquire(blocking=False):
            raise LoaderBusy(
                gettext_noop("다른 모델을 로드하는 중입니다. 완료되거나 취소된 뒤 다시 시도하세요."), "slot locked"
            )
        early = EarlyReads(cancel)
        try:
            # Feedback at once (the first socket message), then the imports and checks move the bar.
            rep = Reporter(on_event, request.lang)
            if request.requested_at:
                rep.timings["queued"] = round(max(time.time() - request.requested_at, 0.0), 4)
            rep.report(0.0, force=True)

            def imports() -> None:
                warm_imports(lambda module, fraction: rep.named_step("imports", fraction, module=module))
                rep.named_step("checking", 0.5)

            def inspected(info: CheckpointInfo) -> None:
                """Files and headers checked: the reads start, then the imports and the skeleton."""
                early.begin(info, request.device, request.dtype, request.allow_remote_code, request.read_limit_bps)
                imports()

            if detect(request.path) != SAFETENSORS:  # reading .bin headers (or an adapter's base) needs torch
                imports()
            info = preflight(request, on_inspected=inspected)
            if cancel.is_set():  # cancelled while checking: the loaded model stays
                raise LoadCancelled()
            request = for_device(request, info)
            self._check_fits(request, info, max_bytes)
            self._unload_locked()
            failure: BaseException | None = None
            try:
                loaded = load_checkpoint(request, on_event, cancel, info=info, rep=rep, early=early)
                self._loaded = loaded
                return loaded
            except BaseException as exc:  # typed or not, a failed load gives its memory back
                failure = exc
            # Out of the except block: the traceback's frames (which hold the half-loaded model)
            # are dropped before the caches are emptied, so a cancel really gives memory back.
            untyped = isinstance(failure, Exception) and not isinstance(failure, LoadError)
            detail = "".join(traceback.format_exception(failure)) if untyped else ""
            _drop_tracebacks(failure)
            devices.release_memory()
            if untyped:  # its traceback kept as text for the job's record, its frames gone
                raise UnexpectedFailure(detail) from None
            raise failure
        finally:
            early.close()  # reads begun for a load that was refused or failed before taking them
            lock.release()

    def _check_fits(self, request: LoadRequest, info: Any, max_bytes: int | None) -> None:
        target = devices.resolve_device(request.device)
        need = fit.need_bytes(info, request.dtype)
        available = fit.room_bytes(target, self._loaded, max_bytes)
        if need > available:
            raise DoesNotFit(
                fit.does_not_fit(need, available, target), f"need={need} available={available} device={target}"
            )

    def unload(self) -> bool:
        if not self._lock.acquire(blocking=False):
            raise LoaderBusy(gettext_noop("모델을 로드하는 중에는 언로드할 수 없습니다."), "slot locked")
        try:
            return self._unload_locked()
        finally:
            self._lock.release()

    def _unload_locked(self) -> bool:
        if self._loaded is None:
            return False
        model = weakref.ref(self._loaded.model)
        self._loaded = None
        # Refcounting frees a model without cycles at once; a full gc over torch+transformers'
        # millions of objects costs ~0.2 s, so pay it only when something still holds the model.
        devices.release_memory(collect=model() is not None)
        return True
