"""Keeps viewers right about what only the database knows.

With the in-memory layer a job started by another process (the CLI) publishes nowhere we can
hear, and a stalled job publishes nothing at all. While any viewer is attached (the server's own
terminal, from start-up to exit, and every open socket), one task per server polls the latest
job twice a second and hands a snapshot to the one publisher when the
row changed without us publishing it, when its ``stalled`` flag flipped, or when the model
folders changed (a training run wrote a checkpoint: ``catalog/changes.py``). It also reaps
orphaned jobs. Failures are logged (once per kind until it recovers), never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from loader.jobs.local import IDENTITY
from loader.jobs.publisher import publisher
from loader.web.offloop import off_loop

POLL_S = 0.5
REAP_EVERY = 10
CATALOG_EVERY = 4  # ticks: the model folders are fingerprinted every 2 s (``catalog/changes.py``)
log = logging.getLogger("loader.watcher")
_clients = 0
_task: asyncio.Task[None] | None = None


def _observe(reap: bool, catalog: bool) -> tuple[Any, dict[str, Any]]:
    from loader.catalog.changes import catalog_check
    from loader.jobs import services
    from loader.jobs.selectors import loader_state

    if reap:
        services.job_reap()
    if catalog:
        catalog_check()  # the version in the state below; a change is sent like any other
    state = loader_state()
    snap, version = state["job"], state["catalog"]["version"]
    if snap is None:
        return (None, None, None, None, None, None, version), state
    foreign = snap["owner"]["pid"] != IDENTITY.pid or snap["owner"]["host"] != IDENTITY.host
    loaded = state["loaded"]["name"] if state["loaded"] else None
    return (snap["id"], snap["updated_at"], snap["stalled"], foreign, snap["active"], loaded, version), state


def _worth_sending(last: Any, key: Any, in_memory: bool) -> bool:
    if last is None or key == last:
        return False
    if last[6] != key[6]:
        return True  # the model folders changed (a new checkpoint): open pages refresh their list
    if key[0] is None:
        return False
    same_job = last[0] == key[0]
    stalled_changed = same_job and last[2] != key[2]
    # Another process's job: the only feed with the in-memory layer; with Redis a safety net
    # for its start and its end (its own final publish may be lost).
    started_or_ended = not same_job or last[4] != key[4]
    loaded_changed = last[5] != key[5]
    return bool((key[3] and (in_memory or started_or_ended)) or stalled_changed or loaded_changed)


async def _run() -> None:
    in_memory = isinstance(get_channel_layer(), InMemoryChannelLayer)
    last_key: Any = None
    tick = 0
    failing = False
    while _clients > 0:
        try:
            # In the read pool, not on Django's one sync thread: a look at 10,000 folders (~0.25 s)
            # must not hold a load or a cancel request behind it.
            key, state = await off_loop(_observe, tick % REAP_EVERY == 0, tick % CATALOG_EVERY == 0)
            if _worth_sending(last_key, key, in_memory):
                publisher.send(state)
            last_key = key
            if failing:
                log.info("watcher recovered")
            failing = False
        except Exception:  # a DB hiccup must not end the watcher; say so once
            if not failing:
                log.exception("watcher poll failed (retrying every %ss)", POLL_S)
            failing = True
        tick += 1
        await asyncio.sleep(POLL_S)


def attach() -> None:
    global _clients, _task
    _clients += 1
    # A task of another (closed) loop never ends: an in-process test's loop, or a restarted server's.
    if _task is None or _task.done() or _task.get_loop() is not asyncio.get_running_loop():
        _task = asyncio.get_running_loop().create_task(_run())


def detach() -> None:
    global _clients
    _clients = max(0, _clients - 1)
