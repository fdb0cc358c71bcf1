"""Reads. ``loader_state`` builds the one message every client gets (page, API, websocket).

What is loaded comes from the ``ServerProcess`` rows, not from this process's memory, so any
server answers the same (a model held by server A shows on server B's dashboard).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from loader.catalog.changes import catalog_version
from loader.jobs import gen_state, messages
from loader.jobs.history import expected_total_seconds
from loader.jobs.i18n import LANGS, both, in_lang
from loader.jobs.local import IDENTITY, pid_alive
from loader.jobs.models import LoadJob, ServerProcess
from loader.pipeline.events import WeightsDetail
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.names import name_view

PROCESS_STALE_S = 15.0
DETAIL_DEFAULTS = asdict(WeightsDetail())


def job_active() -> LoadJob | None:
    return LoadJob.objects.filter(state__in=LoadJob.ACTIVE_STATES).first()


def job_latest() -> LoadJob | None:
    return LoadJob.objects.order_by("-id").first()


def job_list(*, limit: int, before: int | None = None) -> list[LoadJob]:
    """The newest ``limit`` jobs, or those older than job ``before`` (ids only grow, so the id is
    the order: a page never skips or repeats a row while new loads are added above it)."""
    jobs = LoadJob.objects.order_by("-id")
    if before is not None:
        jobs = jobs.filter(id__lt=before)
    return list(jobs[:limit])


def job_page(*, limit: int, before: int | None = None) -> tuple[list[dict[str, Any]], bool]:
    """A page of job snapshots, newest first, and whether older ones remain (one row more is read)."""
    jobs = job_list(limit=limit + 1, before=before)
    return [snapshot for job in jobs[:limit] if (snapshot := job_snapshot(job)) is not None], len(jobs) > limit


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def job_is_stalled(job: LoadJob) -> bool:
    """No progress for the stall time: a queued job stuck in 'preparing' counts too."""
    if job.state not in LoadJob.ACTIVE_STATES:
        return False
    last = job.progress_at or job.started_at or job.created_at
    return (timezone.now() - last).total_seconds() > settings.MACTUNER_STALL_SECONDS


def job_snapshot(job: LoadJob | None) -> dict[str, Any] | None:
    if job is None:
        return None
    error = None
    if job.error_message:
        error = {
            "code": job.error_code, "message": job.error_message, "detail": job.error_detail,
            "text": error_text(job),
        }  # fmt: skip
    return {
        "id": job.pk,
        "state": job.state,
        "active": job.is_active,
        "stage": job.stage,
        "percent": job.percent,
        "message": job.message,
        "message_text": {lang: job_message(job, lang) for lang in LANGS},  # ``message`` in each language
        "error": error,
        "model": job.model_name,
        # What people read: ⟨U+XXXX⟩ for invisible and look-alike characters, and why (names.py).
        "model_display": (view := name_view(job.model_name)).display,
        "model_warning": view.warning,
        "device": job.device or job.device_requested,
        "dtype": job.dtype or job.dtype_requested,
        "device_requested": job.device_requested,
        "dtype_requested": job.dtype_requested,
        "source": job.source,
        "lang": job.lang,  # the language of ``message`` (the requester's)
        "detail": DETAIL_DEFAULTS | (job.detail or {}),
        "timings": job.timings or {},
        "first_token_s": job.first_token_s,  # the load's click to the first generated token
        "expected_total_s": expected_total_seconds(job.model_name) if job.is_active else None,
        "metadata": job.metadata or {},
        "notes": load_notes(job.metadata),
        "stalled": job_is_stalled(job),
        "cancel_requested": job.cancel_requested,
        "owner": {"host": job.owner_host, "pid": job.owner_pid},
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        # What the user waited: the click (or Enter) to the end, preparing and queueing included;
        # ``timings`` keeps the per-stage split beside it.
        "wall_s": round((job.finished_at - job.created_at).total_seconds(), 3) if job.finished_at else None,
        "updated_at": _iso(job.updated_at),
    }


def error_text(job: LoadJob) -> dict[str, str]:
    """The job's error in both languages, from its template and parameters."""
    saved = job.error_params or {}
    return both(saved.get("template") or job.error_message, saved.get("params") or {})


def job_message(job: LoadJob, lang: str) -> str:
    """The job's ``message`` said in ``lang``, whoever asked for the load and in which language
    (it is stored in the requester's; a failure's in Korean, and said here from its error)."""
    if job.state == LoadJob.State.FAILED and job.error_message:
        return in_lang(messages.FAILED, {"message": error_text(job)["en" if lang.startswith("en") else "ko"]}, lang)
    return messages.reworded(job.message, lang)


def process_is_live(row: ServerProcess) -> bool:
    """On this host the pid decides (a paused server is alive); elsewhere the heartbeat does."""
    if row.host == IDENTITY.host:
        return pid_alive(row.pid)
    return bool(timezone.now() - row.heartbeat_at <= timedelta(seconds=PROCESS_STALE_S))


def processes_holding() -> list[ServerProcess]:
    """Live server processes that hold a model, the most recently loaded first."""
    rows = ServerProcess.objects.exclude(model_name="").order_by("-loaded_at")
    return [row for row in rows if process_is_live(row)]


def loaded_summary(row: ServerProcess) -> dict[str, Any]:
    return {
        "name": row.model_name, "path": row.model_path, "device": row.device, "dtype": row.dtype,
        "display_name": name_view(row.model_name).display,
        "metadata": row.metadata, "owner": {"host": row.host, "pid": row.pid, "model_host_pid": row.host_pid},
        "loaded_at": _iso(row.loaded_at), "notes": load_notes(row.metadata),
    }  # fmt: skip


def load_notes(metadata: dict[str, Any] | None) -> list[dict[str, str]]:
    """What the load changed from what was asked, or left out (ignored tensors), in both languages."""
    notes = (metadata or {}).get("notes") or []
    return [both(n.get("template", ""), n.get("params")) for n in notes if isinstance(n, dict)]


LOST_REASONS = {
    "generation_killed": gettext_noop(
        "생성이 멈추지 않아 모델 호스트를 다시 시작했습니다({signal}). 모델 {name}이(가) 언로드되었습니다. 다시 로드하세요."
    ),
    "host_died": gettext_noop(
        "모델 호스트 프로세스가 종료되어({signal}) 모델 {name}이(가) 메모리에서 사라졌습니다. 다시 로드하세요."
    ),
    "out_of_memory": gettext_noop(
        "메모리가 부족해 운영체제가 모델 호스트 프로세스를 종료했습니다({signal}). 모델 {name}이(가) 언로드되었습니다."
    ),
    "cancelled": gettext_noop(
        "취소한 로드가 멈추지 않아 모델 호스트를 다시 시작했습니다. 이전 모델 {name}도 함께 언로드되었습니다."
    ),
}


def model_lost() -> dict[str, Any] | None:
    """The model a live server lost without being asked (its host died), newest first: status says why."""
    rows = ServerProcess.objects.filter(model_name="").exclude(lost={}).order_by("-heartbeat_at")
    for row in rows:
        if not process_is_live(row) or not isinstance(row.lost, dict):
            continue
        lost = row.lost
        template = LOST_REASONS.get(str(lost.get("code")), LOST_REASONS["host_died"])
        params = {"name": lost.get("name") or "?", "signal": lost.get("signal") or "?"}
        return {**lost, "owner": {"host": row.host, "pid": row.pid}, "text": both(template, params)}
    return None


def loader_state(*, job: LoadJob | None = None, holders: list[ServerProcess] | None = None) -> dict[str, Any]:
    """The one message shape: the given job (else the active one, else the latest) and what is loaded.

    ``job`` lets the owner's thread publish its in-memory row without reading it back; ``holders``
    lets it build several snapshots from one read of the server rows.
    """
    job = job or job_active() or job_latest()
    holders = processes_holding() if holders is None else holders
    return {
        "type": "snapshot",
        "job": job_snapshot(job),
        "loaded": loaded_summary(holders[0]) if holders else None,
        # Every live server's model (one per server): memory held anywhere is never hidden.
        "held": [loaded_summary(row) for row in holders],
        "lost": None if holders else model_lost(),
        "generation": _generation(holders),  # a late joiner sees the running (or last) generation first
        "catalog": {"version": catalog_version()},  # a new one: the page asks for the list again
        "emitted_at": time.time(),
    }


def _generation(holders: list[ServerProcess]) -> dict[str, Any] | None:
    """The running generation, or the last one while its model is still the one loaded."""
    generation = gen_state.current()
    if generation is None or generation.get("state") == "running":
        return generation
    return generation if holders and holders[0].model_name == generation.get("model") else None


def loader_state_safe(job: LoadJob, holders: list[ServerProcess] | None = None) -> dict[str, Any]:
    """The same message when the database cannot be read (disk full, gone): the job as the owner
    knows it, nothing loaded claimed."""
    try:
        return loader_state(job=job, holders=holders)
    except DatabaseError:
        return {
            "type": "snapshot", "job": job_snapshot(job), "loaded": None, "held": [], "lost": None,
            "generation": gen_state.current(), "catalog": {"version": catalog_version()}, "emitted_at": time.time(),
        }  # fmt: skip
