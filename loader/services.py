"""Every LoadJob state change. Callers (views, runner, CLI) validate; these act atomically."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import LoadJob

HEARTBEAT_STALE_S = 60
OWN_JOB_GRACE_S = 10
HOST = socket.gethostname()


class JobBusy(Exception):
    """Another job is active; carries it so the caller can say which."""

    def __init__(self, active: LoadJob | None) -> None:
        name = active.model_name if active else "?"
        super().__init__(f"이미 다른 모델({name})을 로드하는 중입니다. 완료되거나 취소된 뒤 다시 시도하세요.")
        self.active = active


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_orphan(job: LoadJob, now: Any) -> bool:
    if job.owner_host == HOST and job.owner_pid:
        if job.owner_pid == os.getpid():
            from .runner import running_job_ids

            # A job just created by this process may not have its thread yet: give it a grace.
            young = now - job.created_at < timedelta(seconds=OWN_JOB_GRACE_S)
            return job.pk not in running_job_ids() and not young
        return not _pid_alive(job.owner_pid)
    beat = job.heartbeat_at or job.created_at
    return now - beat > timedelta(seconds=HEARTBEAT_STALE_S)


def job_reap() -> list[int]:
    """Mark active jobs whose owner died (killed server, crashed CLI) as interrupted."""
    now = timezone.now()
    reaped = []
    for job in LoadJob.objects.filter(state__in=LoadJob.ACTIVE_STATES):
        if _is_orphan(job, now):
            updated = LoadJob.objects.filter(pk=job.pk, state__in=LoadJob.ACTIVE_STATES).update(
                state=LoadJob.State.INTERRUPTED,
                message="로드가 중단되었습니다(서버 또는 프로세스 종료).",
                error_code="interrupted",
                error_message="로드가 중단되었습니다: 로드하던 프로세스가 종료되었습니다. 다시 로드하세요.",
                error_detail=f"owner {job.owner_host}:{job.owner_pid} is gone",
                finished_at=now,
                updated_at=now,
            )
            if updated:
                reaped.append(job.pk)
    return reaped


def job_start(
    *, model_name: str, model_path: str, device: str, dtype: str, source: str, requested_by: str = ""
) -> LoadJob:
    """Create the queued job, or raise JobBusy. The database constraint decides races."""
    job_reap()
    now = timezone.now()
    try:
        with transaction.atomic():
            return LoadJob.objects.create(
                model_name=model_name,
                model_path=model_path,
                device_requested=device,
                dtype_requested=dtype,
                source=source,
                requested_by=requested_by,
                state=LoadJob.State.QUEUED,
                message="준비 중...",
                owner_host=HOST,
                owner_pid=os.getpid(),
                heartbeat_at=now,
                progress_at=now,
            )
    except IntegrityError:
        raise JobBusy(LoadJob.objects.filter(state__in=LoadJob.ACTIVE_STATES).first()) from None


def job_progress(*, job: LoadJob, event: dict[str, Any]) -> None:
    """Persist the latest event; the first one also flips queued → running."""
    now = timezone.now()
    job.stage = event["stage"]
    job.percent = event["percent"]
    job.message = event["message"]
    job.detail = event["detail"]
    job.timings = event["timings"]
    job.progress_at = job.heartbeat_at = now
    fields = ["stage", "percent", "message", "detail", "timings", "progress_at", "heartbeat_at", "updated_at"]
    if job.state == LoadJob.State.QUEUED:
        job.state, job.started_at = LoadJob.State.RUNNING, now
        fields += ["state", "started_at"]
    job.save(update_fields=fields)


def _finish(job: LoadJob, state: str, **fields: Any) -> LoadJob:
    now = timezone.now()
    fields.update(state=state, finished_at=now, updated_at=now)
    if job.started_at is None:
        fields["started_at"] = now
    for key, value in fields.items():
        setattr(job, key, value)
    LoadJob.objects.filter(pk=job.pk).update(**fields)
    return job


def job_succeed(*, job: LoadJob, device: str, dtype: str, metadata: dict[str, Any], event: dict[str, Any]) -> LoadJob:
    return _finish(
        job, LoadJob.State.SUCCEEDED, device=device, dtype=dtype, metadata=metadata, percent=100.0,
        stage="done", message=event["message"], detail=event["detail"], timings=event["timings"],
    )  # fmt: skip


def job_fail(*, job: LoadJob, code: str, message: str, detail: str) -> LoadJob:
    return _finish(
        job, LoadJob.State.FAILED, error_code=code, error_message=message, error_detail=detail[:20000],
        message=f"❌ 오류: {message}",
    )  # fmt: skip


def job_mark_cancelled(*, job: LoadJob) -> LoadJob:
    return _finish(job, LoadJob.State.CANCELLED, message="로드가 취소되었습니다.", cancel_requested=True)


def job_cancel(*, job: LoadJob) -> LoadJob:
    """Ask the job's owner to stop; the owner confirms by marking it cancelled."""
    LoadJob.objects.filter(pk=job.pk, state__in=LoadJob.ACTIVE_STATES).update(
        cancel_requested=True, message="취소하는 중...", updated_at=timezone.now()
    )
    job.refresh_from_db()
    return job


def job_cancel_requested(*, job_id: int) -> bool:
    return LoadJob.objects.filter(pk=job_id, cancel_requested=True).exists()
