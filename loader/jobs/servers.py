"""What each server process holds, written where every process can read it (``ServerProcess``).

Actions: register/heartbeat/expire a process row, record a load or an unload, and unload the
model whichever process holds it (a local slot directly, another server over its channel).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from loader.host.supervisor import HostBusy
from loader.jobs.local import IDENTITY, MODEL_HOST
from loader.jobs.models import ServerProcess
from loader.jobs.publisher import publisher
from loader.jobs.selectors import PROCESS_STALE_S, job_active, loader_state, process_is_live, processes_holding
from loader.pipeline.errors import LoaderBusy
from loader.pipeline.i18n import gettext_noop

log = logging.getLogger("loader.processes")
UNLOAD_WAIT_S = 10.0


class OwnerUnreachable(Exception):
    """The server holding the model did not answer the unload in time."""


def _mine() -> ServerProcess:
    """Our row, fresh; recreated with what the slot holds if someone expired it (we were paused)."""
    now = timezone.now()
    row, created = ServerProcess.objects.update_or_create(
        host=IDENTITY.host, pid=IDENTITY.pid, defaults={"heartbeat_at": now, "channel": IDENTITY.channel}
    )
    model = MODEL_HOST.model
    if created and model is not None:
        _write_loaded(model)
    return row


def _write_loaded(model: dict[str, Any], **also: Any) -> int:
    return ServerProcess.objects.filter(host=IDENTITY.host, pid=IDENTITY.pid).update(
        model_name=model.get("name", ""), model_path=str(model.get("path", "")), device=model.get("device", ""),
        dtype=model.get("dtype", ""), metadata=model.get("metadata") or {}, loaded_at=timezone.now(),
        host_pid=MODEL_HOST.pid, lost={}, **also,
    )  # fmt: skip


def process_register(*, channel: str) -> None:
    """This server starts: a fresh row (a model of a previous process with our pid is not ours)."""
    IDENTITY.channel = channel
    ServerProcess.objects.filter(host=IDENTITY.host, pid=IDENTITY.pid).delete()
    _mine()


def process_heartbeat() -> None:
    if IDENTITY.serving:
        _mine()


def process_expire() -> list[str]:
    """Drop rows whose process is gone, so a dead server's model stops showing as loaded."""
    gone = [row for row in ServerProcess.objects.all() if not process_is_live(row)]
    cutoff = timezone.now() - timedelta(seconds=PROCESS_STALE_S)
    for row in gone:
        ServerProcess.objects.filter(pk=row.pk, heartbeat_at__lte=max(row.heartbeat_at, cutoff)).delete()
    if any(row.model_name for row in gone):
        transaction.on_commit(lambda: publisher.send(loader_state()))
    return [f"{row.host}:{row.pid}" for row in gone]


def process_record_loaded(*, model: dict[str, Any]) -> None:
    if not IDENTITY.serving:
        return
    # One statement when our row is there (the usual case: it sits in the outcome's transaction);
    # if it was expired meanwhile (we were paused), recreate it and write the model again.
    if not _write_loaded(model, heartbeat_at=timezone.now(), channel=IDENTITY.channel):
        _mine()
        _write_loaded(model)


def process_record_unloaded(*, lost: dict[str, Any] | None = None) -> None:
    """Our host holds nothing now; ``lost`` says which model went without being asked to, and why."""
    if not IDENTITY.serving:
        return
    ServerProcess.objects.filter(host=IDENTITY.host, pid=IDENTITY.pid).update(
        model_name="", model_path="", device="", dtype="", metadata={}, loaded_at=None, lost=lost or {}
    )


def process_record_lost(*, model: dict[str, Any], why: str) -> None:
    """The host died holding ``model`` (outside a load): the dashboards say no model, and why."""
    code, _, signal = why.partition(":")
    lost = {"name": model.get("name", ""), "code": code, "signal": signal, "at": timezone.now().isoformat()}
    process_record_unloaded(lost=lost)
    transaction.on_commit(lambda: publisher.send(loader_state()))


def model_unload_local() -> bool:
    """Empty this process's host and its row; raises LoaderBusy while a load runs in the host."""
    try:
        had = MODEL_HOST.unload()
    except HostBusy:
        raise LoaderBusy(gettext_noop("모델을 로드하는 중에는 언로드할 수 없습니다."), "host busy") from None
    process_record_unloaded()
    return had


def model_unload() -> bool:
    """Unload whatever model any live server holds; returns whether one was unloaded.

    Refused (LoaderBusy) while a load runs anywhere. Another server is asked over its channel
    and its row is watched until it is empty.
    """
    if job_active() is not None or MODEL_HOST.busy:
        raise LoaderBusy(gettext_noop("모델을 로드하는 중에는 언로드할 수 없습니다."), "a load is active")
    had = model_unload_local() if MODEL_HOST.model is not None else False
    others = [row for row in processes_holding() if (row.host, row.pid) != (IDENTITY.host, IDENTITY.pid)]
    remote = bool(others)
    # The ask expires with our wait: a server that answers later must not unload after our 503.
    ask = {"type": "loader.unload", "expires": time.time() + UNLOAD_WAIT_S}
    for row in others:
        if row.channel:
            publisher.send_to(row.channel, ask)
    deadline = time.monotonic() + UNLOAD_WAIT_S
    while others and time.monotonic() < deadline:
        time.sleep(0.05)
        others = [row for row in others if ServerProcess.objects.filter(pk=row.pk).exclude(model_name="").exists()]
        others = [row for row in others if process_is_live(row)]
    if others:
        raise OwnerUnreachable(", ".join(f"{row.host}:{row.pid}" for row in others))
    publisher.send(loader_state())
    return had or remote
