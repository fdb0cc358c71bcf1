"""This server process's agent on the channel layer: it is how other servers reach our model.

It listens on a channel of its own (recorded in our ``ServerProcess`` row) for ``loader.unload``
and ``loader.cancel``, and keeps the row's heartbeat fresh so a dead server's model expires.
With the in-memory layer the only sender is this process itself; with Redis, any server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from loader.jobs import servers, services
from loader.jobs.local import TOKENS
from loader.jobs.publisher import publisher
from loader.jobs.selectors import loader_state
from loader.pipeline.errors import LoaderBusy

HEARTBEAT_S = 3.0
log = logging.getLogger("loader.agent")


def _unload() -> None:
    try:
        servers.model_unload_local()
    except LoaderBusy:
        log.warning("unload asked while a load holds the slot; ignored")
        return
    publisher.send(loader_state())


async def handle(message: dict[str, Any]) -> None:
    kind = message.get("type")
    expires = message.get("expires")
    if isinstance(expires, int | float) and time.time() > expires:
        log.warning("agent dropped an expired %r (its sender already answered)", kind)
        return
    if kind == "loader.unload":
        await database_sync_to_async(_unload)()
    elif kind == "loader.cancel" and isinstance(message.get("job_id"), int):
        TOKENS.fire(message["job_id"])
    else:
        log.warning("agent ignored a message of type %r", kind)


async def _listen(channel: str) -> None:
    layer = get_channel_layer()
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis blinked: wait and listen again
            log.warning("agent receive failed: %r", exc)
            await asyncio.sleep(1.0)
            continue
        try:
            await handle(message)
        except Exception:
            log.exception("agent failed to handle %r", message.get("type"))


async def _heartbeat() -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await database_sync_to_async(servers.process_heartbeat)()
            await database_sync_to_async(servers.process_expire)()
            # Jobs of dead owners end even when no browser is watching (HTTP clients see it too).
            await database_sync_to_async(services.job_reap)()
        except Exception:
            log.exception("heartbeat failed (retrying in %ss)", HEARTBEAT_S)


async def start() -> list[asyncio.Task[None]]:
    """Open our channel, register the row, and run the listener and the heartbeat."""
    layer = get_channel_layer()
    channel = await layer.new_channel()  # the default prefix: channels_redis reads one real channel per process
    await database_sync_to_async(servers.process_register)(channel=channel)
    loop = asyncio.get_running_loop()
    return [loop.create_task(_listen(channel)), loop.create_task(_heartbeat())]
