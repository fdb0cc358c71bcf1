"""Reads. ``job_snapshot`` is the one shape the page, the JSON API and the websocket share."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.utils import timezone

from .models import LoadJob


def job_active() -> LoadJob | None:
    return LoadJob.objects.filter(state__in=LoadJob.ACTIVE_STATES).first()


def job_latest() -> LoadJob | None:
    return LoadJob.objects.order_by("-id").first()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def job_is_stalled(job: LoadJob) -> bool:
    if job.state != LoadJob.State.RUNNING:
        return False
    last = job.progress_at or job.started_at or job.created_at
    return (timezone.now() - last).total_seconds() > settings.MACTUNER_STALL_SECONDS


def job_snapshot(job: LoadJob | None) -> dict[str, Any] | None:
    if job is None:
        return None
    detail = {"shard": 0, "shards": 0, "bytes_done": 0, "bytes_total": 0, "bytes_per_s": 0.0, "eta_s": None}
    detail.update(job.detail or {})
    error = None
    if job.error_message:
        error = {"code": job.error_code, "message": job.error_message, "detail": job.error_detail}
    return {
        "id": job.pk,
        "state": job.state,
        "active": job.is_active,
        "stage": job.stage,
        "percent": job.percent,
        "message": job.message,
        "error": error,
        "model": job.model_name,
        "device": job.device or job.device_requested,
        "dtype": job.dtype or job.dtype_requested,
        "device_requested": job.device_requested,
        "dtype_requested": job.dtype_requested,
        "source": job.source,
        "detail": detail,
        "timings": job.timings or {},
        "metadata": job.metadata or {},
        "stalled": job_is_stalled(job),
        "cancel_requested": job.cancel_requested,
        "owner": {"host": job.owner_host, "pid": job.owner_pid},
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "updated_at": _iso(job.updated_at),
    }


def loader_state() -> dict[str, Any]:
    """What a viewer needs: the active job (else the latest one) and this server's loaded model."""
    from .runner import SLOT

    job = job_active() or job_latest()
    return {"job": job_snapshot(job), "loaded": SLOT.summary(), "emitted_at": time.time()}
