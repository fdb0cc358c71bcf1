"""Runs a LoadJob through the pipeline: the web's thread target and the CLI's body.

Progress is written to the job row at most ~5 times a second (stage changes and the final
state always) and published as a full snapshot; the thread opens and closes its own DB
connection, and a cancel flag in the database reaches a job owned by any process.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from . import services
from .events import publisher
from .models import LoadJob
from .pipeline import LoadCancelled, LoadError, LoadRequest, ModelSlot, ProgressEvent
from .selectors import job_snapshot

SLOT = ModelSlot()
WRITE_INTERVAL_S = 0.2
CANCEL_POLL_S = 0.5
_cancels: dict[int, threading.Event] = {}
UNEXPECTED = "예기치 않은 내부 오류가 발생했습니다. 자세한 내용은 작업 기록(관리자 화면)에 있습니다."
log = logging.getLogger("loader.runner")

Listener = Callable[[ProgressEvent], None]


def running_job_ids() -> set[int]:
    return set(_cancels)


def request_cancel(job_id: int) -> bool:
    event = _cancels.get(job_id)
    if event is not None:
        event.set()
    return event is not None


def state_for(job: LoadJob) -> dict[str, Any]:
    return {"type": "snapshot", "job": job_snapshot(job), "loaded": SLOT.summary(), "emitted_at": time.time()}


def start_job_thread(job_id: int) -> threading.Thread:
    _cancels[job_id] = threading.Event()
    thread = threading.Thread(target=_thread_main, args=(job_id,), name=f"load-job-{job_id}", daemon=True)
    thread.start()
    return thread


def _thread_main(job_id: int) -> None:
    close_old_connections()
    try:
        job = LoadJob.objects.get(pk=job_id)
        execute_job(job, _cancels[job_id])
    except Exception:  # never let the thread die silently: the job must not stay "running"
        log.exception("load thread for job %s crashed", job_id)
        try:
            job = LoadJob.objects.get(pk=job_id)
            if job.is_active:
                services.job_fail(job=job, code="internal", message=UNEXPECTED, detail=traceback.format_exc())
                publisher.publish(state_for(job), force=True)
        except Exception:
            log.exception("could not record the crash of job %s", job_id)
    finally:
        _cancels.pop(job_id, None)
        connection.close()


def execute_job(job: LoadJob, cancel: threading.Event, listener: Listener | None = None) -> LoadJob:
    """Load ``job`` into this process's slot; returns the job in its final state."""
    request = LoadRequest(
        Path(job.model_path), job.device_requested, job.dtype_requested,
        allow_remote_code=settings.MACTUNER_TRUST_REMOTE_CODE,
        read_limit_bps=settings.MACTUNER_READ_LIMIT_MBPS * 1e6,
    )  # fmt: skip
    last = {"write": 0.0, "poll": time.monotonic(), "stage": ""}

    def on_event(event: ProgressEvent) -> None:
        now = time.monotonic()
        stage_changed = event.stage.value != last["stage"]
        if stage_changed or now - last["write"] >= WRITE_INTERVAL_S:
            last["write"], last["stage"] = now, event.stage.value
            services.job_progress(job=job, event=event.to_dict())
            publisher.publish(state_for(job), force=stage_changed)
        if now - last["poll"] >= CANCEL_POLL_S:
            last["poll"] = now
            if services.job_cancel_requested(job_id=job.pk):
                cancel.set()
        if listener is not None:
            listener(event)

    last_event: list[ProgressEvent] = []

    def remember(event: ProgressEvent) -> None:
        last_event[:] = [event]  # serialized once, at the end, not on every event
        on_event(event)

    try:
        loaded = SLOT.load(request, remember, cancel)
    except LoadCancelled:
        services.job_mark_cancelled(job=job)
    except LoadError as exc:
        services.job_fail(job=job, code=exc.code, message=exc.user_message, detail=exc.detail)
    except Exception:  # a bug or an exotic checkpoint: record it, keep serving
        log.exception("load of job %s failed unexpectedly", job.pk)
        services.job_fail(job=job, code="internal", message=UNEXPECTED, detail=traceback.format_exc())
    else:
        final = last_event[0].to_dict()
        services.job_succeed(job=job, device=loaded.device, dtype=loaded.dtype, metadata=loaded.metadata, event=final)
    publisher.publish(state_for(job), force=True)
    return job
