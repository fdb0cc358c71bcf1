"""The staged load: tokenizer → config → weights → device → metadata, with events and cancel.

``load_checkpoint`` is the one entry point the slot, the web runner and the CLI share. It never
touches Django; it reports through a callback of ``ProgressEvent`` and raises typed errors.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from loader.pipeline import device as devices
from loader.pipeline.boundary import weights_error
from loader.pipeline.errors import LoadCancelled, LoadError, TokenizerError
from loader.pipeline.events import EventCallback, ProgressEvent, Stage, WeightsDetail, overall_percent, stage_message
from loader.pipeline.i18n import as_note, gettext_noop
from loader.pipeline.inspect.adapters import base_request
from loader.pipeline.inspect.checkpoint import CheckpointInfo
from loader.pipeline.inspect.skeleton import ignored_note
from loader.pipeline.metadata import extract_metadata
from loader.pipeline.preflight import load_config, model_class, preflight, warm_imports
from loader.pipeline.request import LoadedModel, LoadRequest
from loader.pipeline.weights import engine
from loader.pipeline.weights.adapter import attach_adapter
from loader.pipeline.weights.engine import STREAM
from loader.pipeline.weights.fallback import load_observed, move_to_device
from loader.pipeline.weights.stream import Stream
from loader.pipeline.weights.streamed import EarlyReads, StreamProgress, load_streamed, start_stream

EMIT_INTERVAL_S = 0.05


class Reporter:
    """Keeps the overall percent monotonic and rate-limits the chatty weights stage."""

    def __init__(self, on_event: EventCallback, lang: str) -> None:
        self.on_event = on_event
        self.lang = lang
        self.percent = 0.0
        self.detail = WeightsDetail()
        self.timings: dict[str, float] = {}
        self.stage = Stage.PREPARING
        self.stage_started = time.monotonic()
        self.last_emit = 0.0
        self.fmt: dict[str, str] = {}
        self.step = ""
        # The part of the weights stage the base's bytes fill (the rest is an adapter's).
        self.weights_span = (0.0, 1.0)

    def enter(self, stage: Stage, emit: bool = True, **fmt: str) -> None:
        now = time.monotonic()
        if stage is not self.stage:
            self.timings[self.stage.value] = round(now - self.stage_started, 4)
        self.stage, self.stage_started, self.fmt, self.step = stage, now, fmt, ""
        if emit:
            self.report(0.0, force=True)

    def report(self, fraction: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_emit < EMIT_INTERVAL_S:
            return
        self.last_emit = now
        if self.stage is Stage.WEIGHTS:
            fraction = self.weights_span[0] + (self.weights_span[1] - self.weights_span[0]) * fraction
        self.percent = max(self.percent, overall_percent(self.stage, fraction))
        message = stage_message(self.stage, self.lang, self.step, **self.fmt)
        detail = WeightsDetail(**vars(self.detail))
        self.on_event(ProgressEvent(self.stage, self.percent, message, detail, dict(self.timings)))

    def named_step(self, step: str, fraction: float, **fmt: str) -> None:
        """A named step inside a stage (preparing's imports and checks, the weights stage's adapter
        merge): the bar moves and the message says why."""
        self.step, self.fmt = step, fmt
        self.report(fraction, force=True)


def _check(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise LoadCancelled()


def load_checkpoint(
    request: LoadRequest,
    on_event: EventCallback,
    cancel: threading.Event,
    info: CheckpointInfo | None = None,
    rep: Reporter | None = None,
    early: EarlyReads | None = None,
) -> LoadedModel:
    """Run the stages; ``early`` holds reads the slot began during the preflight (CPU), if any."""
    if rep is None:
        rep = Reporter(on_event, request.lang)
        rep.report(0.0, force=True)  # feedback at once, before the slow imports
    info = info or preflight(request)
    request = base_request(request, info)  # an adapter: the stages load its base, then the adapter
    started = time.monotonic()
    warm_imports(lambda module, fraction: rep.named_step("imports", fraction, module=module))
    rep.step = ""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    target = devices.resolve_device(request.device)
    converting = engine.converting(request.dtype, info)
    taken = early.take(target) if early is not None else None
    stream: Stream | None = None
    if taken is not None:
        stream, choice = taken
    else:
        choice = engine.choose(info, target, converting, request.allow_remote_code)
        # The reads start now and overlap the tokenizer, config and model-skeleton stages.
        stream = (
            start_stream(target, choice.shards, cancel, request.read_limit_bps) if choice.engine == STREAM else None
        )
    try:
        return _stages(
            request, rep, cancel, info, target, converting, choice, stream, started, torch, transformers, hf_logging
        )
    finally:
        if stream is not None:
            stream.close()


def _stages(
    request: LoadRequest, rep: Reporter, cancel: threading.Event, info: CheckpointInfo, target: str,
    converting: bool, choice: engine.Choice, stream: Stream | None, started: float, torch: Any, transformers: Any,
    hf_logging: Any,
) -> LoadedModel:  # fmt: skip
    rep.report(1.0, force=True)
    _check(cancel)

    rep.enter(Stage.TOKENIZER)
    # AutoTokenizer reads config.json to pick a class; the preflight's parse of it is the same.
    known = {"config": info.skeleton.config} if info.skeleton is not None else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(request.path), trust_remote_code=request.allow_remote_code, **known
        )
    except LoadError:
        raise
    except Exception as exc:  # transformers raises many kinds for a bad tokenizer
        load_config(transformers, request)  # AutoTokenizer reads config.json too: blame it if it is the cause
        raise TokenizerError(
            gettext_noop("토크나이저를 불러올 수 없습니다: {name}", name=request.path.name), repr(exc)
        ) from exc
    if isinstance(tokenizer, bool) or not hasattr(tokenizer, "encode"):
        raise TokenizerError(
            gettext_noop("토크나이저를 불러올 수 없습니다: {name}", name=request.path.name), f"got {type(tokenizer)!r}"
        )
    rep.report(1.0, force=True)
    _check(cancel)

    rep.enter(Stage.CONFIG)
    # The preflight parsed this folder's config already (the same call); the skeleton holds it.
    config = info.skeleton.config if info.skeleton is not None else load_config(transformers, request)
    model_cls = model_class(transformers, config)
    rep.report(1.0, force=True)
    _check(cancel)

    if stream is not None and model_cls.__name__.startswith("Auto"):  # transformers picks the class itself
        stream.close()
        stream, choice = None, engine.Choice(engine.TRANSFORMERS, "no concrete model class for this config")
    detail = rep.detail
    detail.shards, detail.bytes_total = len(info.shard_files), info.total_bytes
    if info.adapter is not None:  # the adapter's bytes follow the base's in the same bar
        detail.bytes_total += info.adapter.nbytes
        rep.weights_span = (0.0, info.total_bytes / max(detail.bytes_total, 1))
    detail.engine, detail.engine_reason = choice.engine, choice.reason
    progress = StreamProgress(stream, detail, rep.report) if stream is not None else None
    rep.enter(Stage.WEIGHTS)
    dtype_arg: Any = "auto" if request.dtype == "auto" else devices.torch_dtype(request.dtype)
    # set_tqdm_hook arrived during transformers 5.x; without it the page-in pass still reports bytes.
    set_hook = getattr(hf_logging, "set_tqdm_hook", lambda _hook: None)
    try:
        if stream is not None and progress is not None:
            model = load_streamed(
                stream, progress, model_cls, config, dtype_arg, target, request.path, cancel, set_hook, converting
            )
            rep.timings["weights_open"] = round(stream.open_s, 4)  # files + destination memory ready
            if request.requested_at and stream.first_read_at:
                rep.timings["first_byte"] = round(stream.first_read_at - request.requested_at, 4)
        else:
            model = load_observed(
                info, request, model_cls, dtype_arg, target, converting, detail, rep.report, cancel, set_hook
            )
        if model.training:  # from_pretrained returns it in eval mode already (a walk of every module)
            model.eval()
        if info.adapter is not None:
            model = attach_adapter(model, info, rep, cancel)
            rep.step = ""  # a merge (a named step) is over: the last weights report says the stage again
        detail.shard, detail.bytes_done, detail.eta_s = detail.shards, detail.bytes_total, 0.0
        rep.report(1.0, force=True)

        rep.enter(Stage.DEVICE, device=target.upper())
        move_to_device(model, target, lambda done, total: rep.report(done / total), cancel)
        rep.report(1.0, force=True)

        rep.enter(Stage.METADATA)
        metadata = extract_metadata(model, tokenizer, config, info, target)
        metadata["engine"], metadata["engine_reason"], metadata["cache"] = choice.engine, choice.reason, detail.cache
        notes = list(request.notes)
        if info.plan is not None and info.plan.ignored:  # what transformers calls "unexpected keys"
            ignored = info.plan.ignored
            metadata["ignored_tensors"] = {"count": len(ignored), "names": ignored[:20]}
            notes.append(as_note(ignored_note(ignored)))
        if notes:
            metadata["notes"] = notes
        rep.report(1.0, force=True)
    # The slot frees what a failed load held (after dropping the traceback that pins it).
    except LoadError:
        raise
    except Exception as exc:  # typed by its class, in one place; one no rule knows is a bug and propagates
        typed = weights_error(exc, request.path.name, target)
        if typed is None:
            raise
        raise typed from exc

    devices.after_load(target)  # before the 100 %: temporaries freed, the device's copies finished
    rep.enter(Stage.DONE, emit=False)
    rep.timings["total"] = round(time.monotonic() - started, 4)
    metadata["timings"] = dict(rep.timings)
    rep.report(1.0, force=True)  # 100 % only now: weights resident, metadata complete
    got_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return LoadedModel(request.display_name, request.path, target, got_dtype, model, tokenizer, metadata)
