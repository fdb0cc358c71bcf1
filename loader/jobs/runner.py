"""Runs a LoadJob by driving the model host: the web's thread target and the CLI's body.

The load itself runs in the host process (``loader.host``); this thread follows it. Each host
event goes through the one ``Throttle``: when due, the row is written (``services``) and the one
snapshot published. Cancel has one route, the job row's flag: ``services.job_cancel`` sets it
and nudges the owner (this process's token at once, another server over its agent channel, a
CLI by its row); this thread hands it to the host, which gets ``CANCEL_GRACE_S`` to stop before
it is killed and a fresh one spawned (the only cancel that always frees the memory). A host that
dies fails the job with a typed error; the server keeps serving. Threads open and close their
own DB connections; a database that cannot be written (disk full) never stops a load.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, DataError, OperationalError, close_old_connections, connection

from loader.catalog.listing import ModelEntry, resolve_base
from loader.host.supervisor import Host, HostBusy, Outcome
from loader.jobs import servers, services
from loader.jobs.local import MODEL_HOST, TOKENS
from loader.jobs.models import LoadJob
from loader.jobs.publisher import Throttle, publisher
from loader.jobs.selectors import loader_state_safe
from loader.pipeline.events import ProgressEvent, Stage, stage_message
from loader.pipeline.i18n import Msg, gettext_noop
from loader.pipeline.inspect.adapters import read_adapter_config
from loader.pipeline.inspect.safefs import folder_root

CANCEL_POLL_S = 0.5
HEARTBEAT_S = 5.0
UNEXPECTED = gettext_noop("예기치 않은 내부 오류가 발생했습니다. 자세한 내용은 작업 기록(관리자 화면)에 있습니다.")
HOST_DIED = gettext_noop(
    "모델 호스트 프로세스가 종료되었습니다({signal}). 서버는 계속 동작하며, 다음 로드는 새 호스트에서 진행됩니다."
)
OUT_OF_MEMORY = gettext_noop(
    "메모리가 부족해 운영체제가 모델 호스트 프로세스를 종료했습니다({signal}). 더 작은 모델이나 dtype을 선택하세요."
)
log = logging.getLogger("loader.runner")

Listener = Callable[[dict[str, Any]], None]


def start_job_thread(job: LoadJob) -> threading.Thread:
    """Start following the just-committed ``job`` (the view's instance: the thread gets a copy)."""
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


def load_spec(job: LoadJob) -> dict[str, Any]:
    """What the host is asked to load. An adapter's base is resolved here, by the catalog (the
    host has no Django and no settings); the host's preflight checks everything else."""
    path = Path(job.model_path)
    bases = adapter_bases(path, anywhere=job.source == "cli")
    return {
        "path": str(path), "device": job.device_requested, "dtype": job.dtype_requested, "lang": job.lang,
        "allow_remote_code": settings.MACTUNER_TRUST_REMOTE_CODE, "name": job.model_name, "merge": job.merge,
        "read_limit_bps": settings.MACTUNER_READ_LIMIT_MBPS * 1e6, "requested_at": job.created_at.timestamp(),
        "bases": bases, "base_roots_only": job.source != "cli",
    }  # fmt: skip


def adapter_bases(path: Path, *, anywhere: bool, catalog: list[ModelEntry] | None = None) -> dict[str, str]:
    """{base name: folder} for an adapter folder ({} otherwise): the catalog resolves the base
    (the host has no Django and no settings); ``anywhere`` only for the terminal's own loads."""
    with contextlib.suppress(Exception):  # not an adapter, or a broken one: the host says why
        base = read_adapter_config(path, folder_root(path)).get("base_model_name_or_path")
        if isinstance(base, str) and (found := resolve_base(base, catalog, anywhere=anywhere)) is not None:
            return {base: str(found)}
    return {}


class _Follower:
    """The job thread's side of one load: host events in, rows and snapshots out."""

    def __init__(self, job: LoadJob, cancel: threading.Event, listener: Listener | None, host: Host) -> None:
        self.job, self.cancel, self.listener, self.host = job, cancel, listener, host
        # job_start published this job at "preparing 0 %" a moment ago.
        self.throttle = Throttle(sent_stage=job.stage)
        self.last_event: dict[str, Any] | None = None
        self.percent = 0.0
        self.polled = self.beat = time.monotonic()
        self.storage_error = ""

    def on_event(self, event: dict[str, Any]) -> None:
        event["percent"] = self.percent = max(self.percent, float(event.get("percent", 0.0)))
        self.last_event = event
        if self.listener is not None:
            self.listener(event)
        send, stage_changed = self.throttle.due(str(event.get("stage")))
        if send or self.job.state == LoadJob.State.QUEUED:  # the first event says "running" at once
            self._write(event, stage_changed)

    def on_waiting(self, elapsed: float) -> None:
        """The host is still starting (imports): a named step whose seconds move."""
        if self.host.ready:
            return
        percent = round(2.4 * (1 - math.exp(-elapsed / 6)), 2)  # below the host's own "checking" 2.5 %
        message = stage_message(Stage.PREPARING, self.job.lang, "host", elapsed=f"{elapsed:.1f}")
        self.on_event(ProgressEvent(Stage.PREPARING, percent, message).to_dict())

    def on_dropped(self) -> None:
        """The host dropped the previous model for this load: our server row says so now."""
        with contextlib.suppress(DatabaseError):
            servers.process_record_unloaded()
        publisher.send(loader_state_safe(self.job))

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not self.cancel.is_set() and now - self.polled >= CANCEL_POLL_S:
            self.polled = now
            if _flag_set(self.job.pk):
                self.cancel.set()
        if now - self.beat >= HEARTBEAT_S:  # alive even in a stage that reports nothing
            self.beat = now
            with contextlib.suppress(DatabaseError):
                services.job_heartbeat(job_id=self.job.pk)
        return self.cancel.is_set()

    def _write(self, event: dict[str, Any], stage_changed: bool) -> None:
        job = self.job
        try:
            services.job_progress(job=job, event=event)
            self.storage_error = ""
        except DatabaseError as exc:  # disk full, DB gone: the load goes on, viewers still hear it
            if not self.storage_error:
                log.error("job %s: progress not saved: %r", job.pk, exc)
            self.storage_error = repr(exc)
            close_old_connections()
            mirror(job, event)
        publisher.send(loader_state_safe(job), force=stage_changed)


def mirror(job: LoadJob, event: dict[str, Any]) -> None:
    """Keep the in-memory row current when it cannot be written, so viewers still see progress."""
    job.stage, job.percent, job.message = event["stage"], event["percent"], event["message"]
    job.detail, job.timings = event["detail"], event["timings"]


def execute_job(
    job: LoadJob, cancel: threading.Event, listener: Listener | None = None, host: Host = MODEL_HOST,
    grace_s: float | None = None,
) -> LoadJob:  # fmt: skip
    """Load ``job`` in the model host; returns the job in its final state."""
    follower = _Follower(job, cancel, listener, host)
    try:
        outcome = host.load(
            job.pk, load_spec(job), on_event=follower.on_event, on_dropped=follower.on_dropped,
            on_waiting=follower.on_waiting, should_cancel=follower.should_cancel,
            grace_s=settings.MACTUNER_CANCEL_GRACE_S if grace_s is None else grace_s,
        )  # fmt: skip
    except HostBusy:
        outcome = Outcome("failed", error={"code": "busy", "detail": "the model host is running another load"})
    return _record_outcome(job, outcome, follower.last_event, host)


def _record_outcome(job: LoadJob, outcome: Outcome, last_event: dict[str, Any] | None, host: Host) -> LoadJob:
    if outcome.dropped:  # the model held before this load is gone; if the host went, say why
        code = "cancelled" if outcome.state == "cancelled" else str((outcome.error or {}).get("code", ""))
        lost = {"name": outcome.previous, "code": code, "signal": outcome.killed} if outcome.killed else None
        _record(servers.process_record_unloaded, lost=lost)
    if outcome.state == "loaded" and outcome.model is not None:
        model = outcome.model
        final = last_event or {"message": "", "detail": {}, "timings": {}}
        ok = _record(
            services.job_succeed, job=job, device=model.get("device", ""), dtype=model.get("dtype", ""),
            metadata=model.get("metadata") or {}, event=final, model=model,
        )  # fmt: skip
        if not ok:
            log.warning("job %s finished loading but its row had already ended (reaped?)", job.pk)
        if not host.holds(model):  # the host died between its "loaded" and our row: say so, not "loaded"
            lost = {"name": model.get("name", ""), "code": "host_died", "signal": "after the load"}
            _record(servers.process_record_unloaded, lost=lost)
        return _finish_publish(job, reread=not ok)
    if outcome.state == "cancelled":
        dropped = (outcome.previous or "?") if outcome.dropped else ""  # the model this load had unloaded
        _record(services.job_mark_cancelled, job=job, recycled=outcome.killed == "cancel", dropped=dropped)
        return _finish_publish(job)
    error = outcome.error or {}
    code = str(error.get("code") or "internal")
    if code in ("host_died", "out_of_memory") and outcome.killed:
        message = gettext_noop(HOST_DIED if code == "host_died" else OUT_OF_MEMORY, signal=outcome.killed)
        detail = f"model host ended by {outcome.killed} during the load"
        _record(services.job_fail, job=job, code=code, message=message, detail=detail)
    elif code == "internal" or "template" not in error:
        log.error("load of job %s failed unexpectedly:\n%s", job.pk, error.get("detail", ""))
        _record(services.job_fail, job=job, code="internal", message=UNEXPECTED, detail=str(error.get("detail", "")))
    else:
        message = Msg(str(error["template"]), error.get("params") or {})
        _record(services.job_fail, job=job, code=code, message=message, detail=str(error.get("detail", "")))
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
