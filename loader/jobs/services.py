"""Every LoadJob state change: guarded transitions, each one UPDATE … WHERE state IN (allowed).

A transition that is not allowed from the row's current state changes nothing and returns
False (a reaped job is never flipped back to ``succeeded``). Callers validate input; the
actions here own the busy check, the commit, the thread start and the publish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from loader.jobs import generations, messages
from loader.jobs.history import forget_expected
from loader.jobs.i18n import in_lang
from loader.jobs.local import IDENTITY, MODEL_HOST, TOKENS, pid_alive
from loader.jobs.models import LoadJob, ServerProcess
from loader.jobs.publisher import publisher
from loader.jobs.selectors import loader_state
from loader.jobs.servers import process_record_loaded
from loader.pipeline.i18n import gettext_noop, parts

S = LoadJob.State
ACTIVE = (S.QUEUED, S.RUNNING)
HEARTBEAT_STALE_S = 60
MESSAGE_MAX = LoadJob._meta.get_field("message").max_length or 500
OWN_JOB_GRACE_S = 10
log = logging.getLogger("loader.services")


class JobBusy(Exception):
    """Another job is active (or this process is still freeing the last one); nothing was written."""

    def __init__(self, active: LoadJob | None, message: str = "") -> None:
        name = active.model_name if active else "?"
        self.message = message or gettext_noop(
            "이미 다른 모델({name})을 로드하는 중입니다. 완료되거나 취소된 뒤 다시 시도하세요.", name=name
        )
        super().__init__(self.message)
        self.active = active


def _transition(job: LoadJob, allowed: tuple[str, ...], **fields: Any) -> bool:
    """Apply ``fields`` only if the row is still in ``allowed``; mirror them on ``job`` if so."""
    fields["updated_at"] = timezone.now()
    if isinstance(fields.get("message"), str):
        fields["message"] = fields["message"][:MESSAGE_MAX]  # a long error must never fail the write
    changed = LoadJob.objects.filter(pk=job.pk, state__in=allowed).update(**fields)
    if changed:
        for key, value in fields.items():
            setattr(job, key, value)
    return bool(changed)


def publish_state(job: LoadJob | None = None, *, force: bool = True) -> None:
    """Send the one snapshot message, after the surrounding transaction commits."""
    transaction.on_commit(lambda: publisher.send(loader_state(job=job), force=force))


# --- start -------------------------------------------------------------------------------------


def job_start(
    *, model_name: str, model_path: str, device: str, dtype: str, source: str, requested_by: str = "",
    lang: str = "ko", then: Callable[[LoadJob], Any] | None = None, merge: bool = False,
) -> LoadJob:  # fmt: skip
    """Create the queued job and, after commit, run ``then(job)`` (the web starts its load
    thread there); or raise JobBusy having written nothing.

    The partial unique index decides races between threads, processes and the CLI.
    """
    job_reap()
    # A load clicked during a generation stops the generation first (it holds the host).
    generations.generation_cancel(wait_s=settings.MACTUNER_CANCEL_GRACE_S + 2.0)
    if MODEL_HOST.busy:  # a load of ours runs in our host: refuse before any row exists
        active = LoadJob.objects.filter(state__in=ACTIVE).first()
        if active is not None:
            raise JobBusy(active)
        raise JobBusy(None, gettext_noop("이전 로드를 정리하는 중입니다. 잠시 후 다시 시도하세요."))
    now = timezone.now()
    try:
        with transaction.atomic():
            job = LoadJob.objects.create(
                model_name=model_name, model_path=model_path, device_requested=device, dtype_requested=dtype,
                source=source, requested_by=requested_by, lang=lang, merge=merge, state=S.QUEUED, message=in_lang(messages.PREPARING, {}, lang),
                owner_host=IDENTITY.host, owner_pid=IDENTITY.pid, heartbeat_at=now, progress_at=now,
            )  # fmt: skip
            if then is not None:
                transaction.on_commit(lambda: then(job))
            publish_state(job)
    except IntegrityError:
        raise JobBusy(LoadJob.objects.filter(state__in=ACTIVE).first()) from None
    return job


# --- progress and outcome (the owner's thread) ------------------------------------------------------


def job_progress(*, job: LoadJob, event: dict[str, Any]) -> bool:
    """Persist the latest event; the first one flips queued → running."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "stage": event["stage"], "percent": event["percent"], "message": event["message"],
        "detail": event["detail"], "timings": event["timings"], "progress_at": now, "heartbeat_at": now,
    }  # fmt: skip
    # The row decides, not our copy (which may be stale after the database was unwritable); our
    # copy only says which write to try first, so the usual case is one statement. The first
    # flips queued → running, from when the first event came (it may have been published first).
    flip = {"state": S.RUNNING, "started_at": job.started_at or now}
    order = (S.QUEUED, S.RUNNING) if job.state == S.QUEUED else (S.RUNNING, S.QUEUED)
    return any(_transition(job, (state,), **fields, **(flip if state == S.QUEUED else {})) for state in order)


def job_heartbeat(*, job_id: int) -> bool:
    """The owner is alive even when no progress comes (a slow stage): other hosts must not reap it."""
    return bool(LoadJob.objects.filter(pk=job_id, state__in=ACTIVE).update(heartbeat_at=timezone.now()))


def _finish(job: LoadJob, state: str, **fields: Any) -> bool:
    now = timezone.now()
    # Always written: a fast load's first progress write may have been superseded by this one.
    fields.update(state=state, finished_at=now, started_at=job.started_at or now)
    forget_expected(job.model_name)
    return _transition(job, ACTIVE, **fields)


def job_succeed(
    *, job: LoadJob, device: str, dtype: str, metadata: dict[str, Any], event: dict[str, Any],
    model: dict[str, Any] | None = None,
) -> bool:  # fmt: skip
    """The job succeeded; with ``model`` (the host's summary) this server's row says so in the
    same transaction."""
    with transaction.atomic():
        if model is not None:
            process_record_loaded(model=model)
        return _finish(
            job, S.SUCCEEDED, device=device, dtype=dtype, metadata=metadata, percent=100.0, stage="done",
            message=event["message"], detail=event["detail"], timings=event["timings"],
        )  # fmt: skip


def _error_fields(code: str, message: str, detail: str) -> dict[str, Any]:
    template, params = parts(message)
    return {
        "error_code": code, "error_message": str(message), "error_detail": detail[:20000],
        "error_params": {"template": template, "params": params},
    }  # fmt: skip


def job_fail(*, job: LoadJob, code: str, message: str, detail: str) -> bool:
    """``message`` may be a ``Msg`` (template + parameters): viewers then read it in their language."""
    return _finish(
        job,
        S.FAILED,
        message=gettext_noop(messages.FAILED, message=message),
        **_error_fields(code, message, detail),
    )


def job_mark_cancelled(*, job: LoadJob, recycled: bool = False, dropped: str = "") -> bool:
    """``recycled``: the load did not stop within the grace, so its host was killed (and its memory
    freed with it) and a fresh one started. ``dropped``: the name of the model this load had
    already unloaded to make room; a cancel does not bring it back, and the user must be told that
    nothing is loaded now, and which model went (not just "cancelled")."""
    message = messages.CANCELLED
    extra: dict[str, Any] = {}
    if dropped:
        message = gettext_noop(messages.CANCELLED_DROPPED, name=dropped)
    if recycled:
        said = gettext_noop(
            "로드가 제때 멈추지 않아 모델 호스트 프로세스를 다시 시작했습니다. 메모리는 모두 반환되었습니다."
        )
        if dropped:
            said = gettext_noop(
                "로드가 제때 멈추지 않아 모델 호스트 프로세스를 다시 시작했습니다. 메모리는 모두 반환되었고, "
                "이전 모델 {name}도 언로드되어 지금 로드된 모델이 없습니다.",
                name=dropped,
            )
        extra = _error_fields(
            "host_recycled", said, "the host did not stop within the cancel grace; killed and respawned"
        )
    elif dropped:  # the job's error text too: the page and the CLI say it beside "cancelled", in the viewer's language
        said = gettext_noop(
            "이전 모델 {name}은(는) 이 로드를 위해 이미 언로드되어, 지금 로드된 모델이 없습니다.", name=dropped
        )
        extra = _error_fields(
            "previous_unloaded", said, f"the previous model {dropped!r} was unloaded before the cancel"
        )
    return _finish(job, S.CANCELLED, message=in_lang(*parts(message), job.lang), cancel_requested=True, **extra)


# --- cancel: one route for web and CLI jobs, in any process -------------------------------------


def job_cancel(*, job: LoadJob) -> bool:
    """Flag the job (the owner's load checks the flag) and nudge the owner to look now.

    The flag in the row is the route: an owner in this process sees it through its token at
    once, one in another server through the agent's channel, a CLI owner by reading the row.
    """
    cancelling = in_lang(messages.CANCELLING, {}, job.lang)  # the requester's language, like the stages
    if not _transition(job, ACTIVE, cancel_requested=True, message=cancelling):
        return False
    if job.owner_host == IDENTITY.host and job.owner_pid == IDENTITY.pid:
        TOKENS.fire(job.pk)
    elif job.owner_pid is not None:
        owner = ServerProcess.objects.filter(host=job.owner_host, pid=job.owner_pid).exclude(channel="").first()
        if owner is not None:  # a CLI owner has no channel: it reads the flag from its row
            message = {"type": "loader.cancel", "job_id": job.pk}
            transaction.on_commit(lambda: publisher.send_to(owner.channel, message))
    publish_state(job)
    return True


def job_cancel_requested(*, job_id: int) -> bool:
    return LoadJob.objects.filter(pk=job_id, cancel_requested=True).exists()


# --- reaping: jobs whose owner is gone ---------------------------------------------------------------


def _is_orphan(job: LoadJob, now: Any) -> bool:
    if job.owner_host == IDENTITY.host and job.owner_pid:
        if job.owner_pid == IDENTITY.pid:
            # A job just created here may not have its thread yet: give it a grace.
            young = now - job.created_at < timedelta(seconds=OWN_JOB_GRACE_S)
            return job.pk not in TOKENS.running() and not young
        return not pid_alive(job.owner_pid)
    beat = job.heartbeat_at or job.created_at
    return bool(now - beat > timedelta(seconds=HEARTBEAT_STALE_S))


def job_reap() -> list[int]:
    """Mark active jobs whose owner died (killed server, crashed CLI) as interrupted."""
    now = timezone.now()
    reaped = []
    for job in LoadJob.objects.filter(state__in=ACTIVE):
        if not _is_orphan(job, now):
            continue
        gone = gettext_noop("로드가 중단되었습니다: 로드하던 프로세스가 종료되었습니다. 다시 로드하세요.")
        if _finish(
            job, S.INTERRUPTED, message=messages.INTERRUPTED,
            **_error_fields("interrupted", gone, f"owner {job.owner_host}:{job.owner_pid} is gone"),
        ):  # fmt: skip
            reaped.append(job.pk)
            log.warning("job %s interrupted: owner %s:%s is gone", job.pk, job.owner_host, job.owner_pid)
            publish_state(job)
    return reaped
