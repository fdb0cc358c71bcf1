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
from typing import Any, NamedTuple

from channels.layers import InMemoryChannelLayer, get_channel_layer

from loader.catalog.changes import CHECK_EVERY_S
from loader.jobs.local import IDENTITY
from loader.jobs.publisher import publisher
from loader.web.offloop import off_loop

POLL_S = 0.5
REAP_EVERY = 10
CATALOG_EVERY = round(CHECK_EVERY_S / POLL_S)  # ticks between two looks at the model folders
log = logging.getLogger("loader.watcher")
_clients = 0
_task: asyncio.Task[None] | None = None


class _Seen(NamedTuple):
    """What one look saw; a snapshot is worth sending when it differs in a way viewers care about."""

    job: int | None = None
    updated_at: str | None = None
    stalled: bool = False
    foreign: bool = False  # the job's owner is another process (the CLI, another server)
    active: bool = False
    loaded: str | None = None
    catalog: str = ""  # the model folders' version


def _observe(reap: bool, catalog: bool) -> tuple[_Seen, dict[str, Any]]:
    from loader.catalog.changes import catalog_check
    from loader.jobs import services
    from loader.jobs.selectors import loader_state

    if reap:
        services.job_reap()
    if catalog:
        catalog_check()  # the version in the state below; a change is sent like any other
    state = loader_state()
    snap, loaded = state["job"], state["loaded"]["name"] if state["loaded"] else None
    if snap is None:
        return _Seen(loaded=loaded, catalog=state["catalog"]["version"]), state
    foreign = snap["owner"]["pid"] != IDENTITY.pid or snap["owner"]["host"] != IDENTITY.host
    seen = _Seen(
        snap["id"], snap["updated_at"], snap["stalled"], foreign, snap["active"], loaded, state["catalog"]["version"]
    )
    return seen, state


def _worth_sending(last: _Seen | None, key: _Seen, in_memory: bool) -> bool:
    if last is None or key == last:
        return False
    if last.catalog != key.catalog:
        return True  # the model folders changed (a new checkpoint): open pages refresh their list
    if key.job is None:
        return False
    same_job = last.job == key.job
    stalled_changed = same_job and last.stalled != key.stalled
    # Another process's job: the only feed with the in-memory layer; with Redis a safety net
    # for its start and its end (its own final publish may be lost).
    started_or_ended = not same_job or last.active != key.active
    loaded_changed = last.loaded != key.loaded
    return bool((key.foreign and (in_memory or started_or_ended)) or stalled_changed or loaded_changed)


async def _run() -> None:
    in_memory = isinstance(get_channel_layer(), InMemoryChannelLayer)
    last_key: _Seen | None = None
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
