"""Runs a LoadJob through the pipeline: the web's thread target and the CLI's body.

Progress goes through the one ``Throttle``: when it says so the row is written and the one
snapshot published. Threads open and close their own DB connections. Cancel has one route,
the job row's flag: ``services.job_cancel`` sets it and nudges the owner (this process's token
at once, another server over its agent channel); the supervising thread also reads the flag
every 0.5 s, which is how a CLI owner (no channel) hears it. A database that cannot be written
(disk full) never stops a load: progress is still published, the outcome written once it can be.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, OperationalError, close_old_connections, connection

from . import processes, services
from .catalog import resolve_base
from .events import Throttle, publisher
from .models import LoadJob
from .pipeline import LoadCancelled, LoadedModel, LoadError, LoadRequest, ProgressEvent
from .pipeline.i18n import Msg, gettext_noop
from .process import IDENTITY, SLOT, TOKENS
from .progress_sink import ProgressSink
from .selectors import loader_state_safe

CANCEL_POLL_S = 0.5
HEARTBEAT_S = 5.0
UNEXPECTED = gettext_noop("예기치 않은 내부 오류가 발생했습니다. 자세한 내용은 작업 기록(관리자 화면)에 있습니다.")
log = logging.getLogger("loader.runner")

Listener = Callable[[ProgressEvent], None]


def start_job_thread(job: LoadJob) -> threading.Thread:
    """Start the load of the just-committed ``job`` (the view's instance: the thread gets a copy,
    so it starts without reading the row back and the view may go on serializing its own)."""
    job = copy.copy(job)
    TOKENS.open(job.pk)
    thread = threading.Thread(target=_thread_main, args=(job,), name=f"load-job-{job.pk}", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread could be started (limits, memory): the job must not stay queued
        TOKENS.close(job.pk)
        services.job_fail(job=job, code="internal", message=UNEXPECTED, detail=traceback.format_exc())
        publisher.send(loader_state_safe(job))
        raise
    return thread


def _thread_main(job: LoadJob) -> None:
    try:
        execute_job(job, TOKENS.open(job.pk))
    except Exception:  # never let the thread die silently: the job must not stay "running"
        log.exception("load thread for job %s crashed", job.pk)
        try:
            job = LoadJob.objects.get(pk=job.pk)
            _record(services.job_fail, job=job, code="internal", message=UNEXPECTED, detail=traceback.format_exc())
            publisher.send(loader_state_safe(job))
        except Exception:
            log.exception("could not record the crash of job %s", job.pk)
    finally:
        TOKENS.close(job.pk)
        connection.close()


class _Outcome:
    """What the worker thread produced, read by the supervising thread once it ends."""

    loaded: LoadedModel | None = None
    error: BaseException | None = None
    traceback: str = ""


def _work(outcome: _Outcome, request: LoadRequest, on_event: Listener, cancel: threading.Event) -> None:
    try:
        outcome.loaded = SLOT.load(request, on_event, cancel)
    except BaseException as exc:  # handed to the supervisor, which records it
        outcome.error, outcome.traceback = exc, traceback.format_exc()
    finally:
        connection.close()  # the worker's own connection (progress writes)


def execute_job(job: LoadJob, cancel: threading.Event, listener: Listener | None = None) -> LoadJob:
    """Load ``job`` into this process's slot; returns the job in its final state.

    The pipeline runs in a worker thread and this thread supervises it: it reads the cancel flag
    of the row (the one cancel route), and if a cancelled load cannot stop (a read blocked on a
    dead disk or a FIFO) it abandons it after ``ABANDON_AFTER_S`` so the slot serves the next load.
    """
    request = LoadRequest(
        Path(job.model_path), job.device_requested, job.dtype_requested,
        allow_remote_code=settings.MACTUNER_TRUST_REMOTE_CODE,
        read_limit_bps=settings.MACTUNER_READ_LIMIT_MBPS * 1e6, lang=job.lang, name=job.model_name,
        merge=job.merge, base_resolver=resolve_base, requested_at=job.created_at.timestamp(),
    )  # fmt: skip
    # job_start published this job at "preparing 0 %" a moment ago: the load's own first event
    # says nothing new, and skipping its write leaves the load's first milliseconds to the load.
    throttle = Throttle(sent_stage=job.stage)
    muted = threading.Event()
    sink = ProgressSink(job)
    last_event: list[ProgressEvent] = []

    def on_event(event: ProgressEvent) -> None:
        if muted.is_set():
            if cancel.is_set():
                raise LoadCancelled()
            return
        last_event[:] = [event]  # serialized when due, not on every event
        send, stage_changed = throttle.due(event.stage.value)
        if send:
            sink.offer(event, stage_changed)  # written and published by the sink's thread
        if listener is not None:
            listener(event)

    try:
        return _supervise(job, request, on_event, cancel, muted, sink, last_event)
    finally:
        sink.close()


def _supervise(
    job: LoadJob, request: LoadRequest, on_event: Listener, cancel: threading.Event, muted: threading.Event,
    sink: ProgressSink, last_event: list[ProgressEvent],
) -> LoadJob:  # fmt: skip
    outcome = _Outcome()
    worker = threading.Thread(
        target=_work, args=(outcome, request, on_event, cancel), name=f"load-work-{job.pk}", daemon=True
    )
    worker.start()  # first: nothing on the way to the first byte read waits for this thread's work
    rss_before = _rss()
    cancelled_at = 0.0
    beat = time.monotonic()
    while worker.is_alive():
        worker.join(CANCEL_POLL_S)
        if not worker.is_alive():
            break  # done: the outcome is what counts now, not one more query of the cancel flag
        if not cancel.is_set() and _flag_set(job.pk):
            cancel.set()
        if time.monotonic() - beat >= HEARTBEAT_S:  # alive even in a stage that reports nothing
            beat = time.monotonic()
            with contextlib.suppress(DatabaseError):
                services.job_heartbeat(job_id=job.pk)
        if cancel.is_set() and worker.is_alive():
            cancelled_at = cancelled_at or time.monotonic()
            if time.monotonic() - cancelled_at >= settings.MACTUNER_ABANDON_AFTER_S:
                muted.set()
                SLOT.abandon()
                sink.drain()
                _record(services.job_abandon, job=job, held_bytes=max(_rss() - rss_before, 0))
                log.error("job %s: the load did not stop after cancel; abandoned its thread", job.pk)
                return _finish_publish(job)
    # Every progress row written before the outcome; a success's own write supersedes the rest.
    sink.drain(superseded=outcome.loaded is not None and outcome.error is None)
    if isinstance(outcome.error, LoadCancelled):
        _record(services.job_mark_cancelled, job=job)
    elif isinstance(outcome.error, LoadError):
        err = outcome.error
        _record(services.job_fail, job=job, code=err.code, message=Msg(err.template, err.params), detail=err.detail)
    elif outcome.error is not None:  # a bug or an exotic checkpoint: record it, keep serving
        log.error("load of job %s failed unexpectedly:\n%s", job.pk, outcome.traceback)
        _record(services.job_fail, job=job, code="internal", message=UNEXPECTED, detail=outcome.traceback)
    elif outcome.loaded is not None:
        loaded = outcome.loaded
        final = last_event[0].to_dict()
        ok = _record(
            services.job_succeed, job=job, device=loaded.device, dtype=loaded.dtype, metadata=loaded.metadata,
            event=final, loaded=loaded,
        )  # fmt: skip
        if not ok:
            log.warning("job %s finished loading but its row had already ended (reaped?)", job.pk)
        return _finish_publish(job, reread=not ok)
    if SLOT.loaded is None and IDENTITY.serving:
        _record(processes.process_record_unloaded)
    return _finish_publish(job)


def _flag_set(job_id: int) -> bool:
    try:
        return services.job_cancel_requested(job_id=job_id)
    except DatabaseError:
        close_old_connections()  # a dropped connection must not hide every later cancel
        return False


def _record(action: Callable[..., Any], **kwargs: Any) -> Any:
    """Write an outcome, retrying while the database cannot (a full disk gets room again)."""
    deadline = time.monotonic() + settings.MACTUNER_STORAGE_RETRY_S
    delay = 0.2
    while True:
        try:
            return action(**kwargs)
        except DataError:  # a value the database refuses: retrying cannot help
            raise
        except OperationalError as exc:  # disk full, locked, connection lost: it may pass
            if time.monotonic() >= deadline:
                log.error("could not record %s: %r (gave up)", action.__name__, exc)
                raise
            log.warning("could not record %s yet: %r (retrying)", action.__name__, exc)
            close_old_connections()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _finish_publish(job: LoadJob, reread: bool = True) -> LoadJob:
    """Publish the job's final state; ``reread=False`` when our copy is what was just written."""
    if reread:
        with contextlib.suppress(DatabaseError):
            job.refresh_from_db()
    publisher.send(loader_state_safe(job))
    return job


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0
