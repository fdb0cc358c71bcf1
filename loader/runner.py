"""Runs a LoadJob through the pipeline: the web's thread target and the CLI's body.

Progress goes through the one ``Throttle``: when it says so the row is written and the one
snapshot published. The thread opens and closes its own DB connection. Cancel has one route,
the job row's flag: ``services.job_cancel`` sets it and nudges the owner (this process's token
at once, another server over its agent channel); a CLI owner reads the flag every 0.5 s.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection

from . import processes, services
from .events import Throttle, publisher
from .models import LoadJob
from .pipeline import LoadCancelled, LoadError, LoadRequest, ProgressEvent
from .process import IDENTITY, SLOT, TOKENS
from .selectors import loader_state

CANCEL_POLL_S = 0.5
UNEXPECTED = "예기치 않은 내부 오류가 발생했습니다. 자세한 내용은 작업 기록(관리자 화면)에 있습니다."
log = logging.getLogger("loader.runner")

Listener = Callable[[ProgressEvent], None]


def start_job_thread(job_id: int) -> threading.Thread:
    TOKENS.open(job_id)
    thread = threading.Thread(target=_thread_main, args=(job_id,), name=f"load-job-{job_id}", daemon=True)
    thread.start()
    return thread


def _thread_main(job_id: int) -> None:
    close_old_connections()
    try:
        job = LoadJob.objects.get(pk=job_id)
        execute_job(job, TOKENS.open(job_id))
    except Exception:  # never let the thread die silently: the job must not stay "running"
        log.exception("load thread for job %s crashed", job_id)
        try:
            job = LoadJob.objects.get(pk=job_id)
            services.job_fail(job=job, code="internal", message=UNEXPECTED, detail=traceback.format_exc())
            publisher.send(loader_state(job=job))
        except Exception:
            log.exception("could not record the crash of job %s", job_id)
    finally:
        TOKENS.close(job_id)
        connection.close()


def execute_job(job: LoadJob, cancel: threading.Event, listener: Listener | None = None) -> LoadJob:
    """Load ``job`` into this process's slot; returns the job in its final state."""
    request = LoadRequest(
        Path(job.model_path), job.device_requested, job.dtype_requested,
        allow_remote_code=settings.MACTUNER_TRUST_REMOTE_CODE,
        read_limit_bps=settings.MACTUNER_READ_LIMIT_MBPS * 1e6, lang=job.lang, name=job.model_name,
    )  # fmt: skip
    throttle = Throttle()
    polled = {"at": time.monotonic(), "recorded_unload": False}
    last_event: list[ProgressEvent] = []

    def on_event(event: ProgressEvent) -> None:
        last_event[:] = [event]  # serialized when due, not on every event
        send, stage_changed = throttle.due(event.stage.value)
        if send:
            if not polled["recorded_unload"] and SLOT.loaded is None and IDENTITY.serving:
                polled["recorded_unload"] = True  # the slot dropped the previous model: say so
                processes.process_record_unloaded()
            services.job_progress(job=job, event=event.to_dict())
            publisher.send(loader_state(job=job), force=stage_changed)
        now = time.monotonic()
        if now - polled["at"] >= CANCEL_POLL_S:
            polled["at"] = now
            if services.job_cancel_requested(job_id=job.pk):
                cancel.set()
        if listener is not None:
            listener(event)

    try:
        loaded = SLOT.load(request, on_event, cancel)
    except LoadCancelled:
        services.job_mark_cancelled(job=job)
    except LoadError as exc:
        services.job_fail(job=job, code=exc.code, message=exc.user_message, detail=exc.detail)
    except Exception:  # a bug or an exotic checkpoint: record it, keep serving
        log.exception("load of job %s failed unexpectedly", job.pk)
        services.job_fail(job=job, code="internal", message=UNEXPECTED, detail=traceback.format_exc())
    else:
        processes.process_record_loaded(loaded=loaded)
        final = last_event[0].to_dict()
        if not services.job_succeed(
            job=job, device=loaded.device, dtype=loaded.dtype, metadata=loaded.metadata, event=final
        ):
            log.warning("job %s finished loading but its row had already ended (reaped?)", job.pk)
    if SLOT.loaded is None and IDENTITY.serving:
        processes.process_record_unloaded()
    job.refresh_from_db()
    publisher.send(loader_state(job=job))
    return job
