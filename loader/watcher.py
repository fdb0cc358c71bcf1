"""Keeps viewers right about what only the database knows.

With the in-memory layer a job started by another process (the CLI) publishes nowhere we can
hear, and a stalled job publishes nothing at all. While any socket is open, one task per
server loop polls the latest job twice a second and publishes a snapshot when its row changed
without us publishing it, or when its ``stalled`` flag flipped. It also reaps orphaned jobs.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer

from .events import GROUP, snapshot_event

POLL_S = 0.5
REAP_EVERY = 10
_clients = 0
_task: asyncio.Task[None] | None = None


def _observe(reap: bool) -> tuple[Any, dict[str, Any]]:
    from . import services
    from .runner import SLOT
    from .selectors import job_active, job_latest, job_snapshot

    if reap:
        services.job_reap()
    job = job_active() or job_latest()
    snap = job_snapshot(job)
    foreign = bool(job and job.owner_pid != os.getpid())
    key = (snap["id"], snap["updated_at"], snap["stalled"], foreign, snap["active"]) if snap else None
    return key, {"type": "snapshot", "job": snap, "loaded": SLOT.summary(), "emitted_at": time.time()}


async def _run() -> None:
    in_memory = isinstance(get_channel_layer(), InMemoryChannelLayer)
    last_key: Any = None
    tick = 0
    while _clients > 0:
        try:
            key, state = await database_sync_to_async(_observe)(tick % REAP_EVERY == 0)
            if last_key is not None and key != last_key and key is not None:
                foreign, same_job = key[3], last_key[0] == key[0]
                stalled_changed = same_job and last_key[2] != key[2]
                # Another process's job: the only feed with the in-memory layer; with Redis a
                # safety net for its start and its end (its own final publish may be lost).
                started_or_ended = not same_job or last_key[4] != key[4]
                if (foreign and (in_memory or started_or_ended)) or stalled_changed:
                    await get_channel_layer().group_send(GROUP, snapshot_event(state))
            last_key = key
        except Exception:  # a DB hiccup must not end the watcher
            pass
        tick += 1
        await asyncio.sleep(POLL_S)


def attach() -> None:
    global _clients, _task
    _clients += 1
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_run())


def detach() -> None:
    global _clients
    _clients = max(0, _clients - 1)
