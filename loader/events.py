"""Publishing snapshots to the ``loader`` group without ever blocking the load thread.

The in-memory channel layer belongs to the server's event loop, so a plain thread must not
drive it through a second loop. The load thread only calls ``loop.call_soon_threadsafe``; the
loop coalesces (at most ~10 sends/s, stage changes and the final state never dropped) and
does the ``group_send``. With Redis and no server loop (the CLI) a private loop thread does it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

GROUP = "loader"
EVENT_TYPE = "loader.snapshot"


def snapshot_event(state: dict[str, Any]) -> dict[str, Any]:
    """The group message: the snapshot encoded once here, not once per connected consumer."""
    return {"type": EVENT_TYPE, "text": json.dumps(state, ensure_ascii=False)}


MIN_INTERVAL_S = 0.1
SEND_TIMEOUT_S = 5.0

log = logging.getLogger("loader.events")


class Publisher:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[dict[str, Any], bool]] = []
        self._flushing = False
        self._last_sent = 0.0
        self._lock = threading.Lock()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called from the server's loop (consumer connect): that loop owns the in-memory layer."""
        self._loop = loop

    def _target(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop
        if loop is not None and loop.is_running() and not loop.is_closed():
            return loop
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return None  # nobody in this process can be listening
        with self._lock:
            if self._own_loop is None:
                self._own_loop = asyncio.new_event_loop()
                threading.Thread(target=self._own_loop.run_forever, name="loader-publisher", daemon=True).start()
        return self._own_loop

    def publish(self, state: dict[str, Any], force: bool = False) -> None:
        """Thread-safe and non-blocking: hand the snapshot to the loop and return."""
        loop = self._target()
        if loop is None:
            return
        message = snapshot_event(state)
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._offer, message, force)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until queued snapshots are sent (a CLI about to exit must not lose its final one)."""
        loop = self._target()
        if loop is None:
            return

        async def drained() -> None:
            while self._queue or self._flushing:
                await asyncio.sleep(0.01)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drained(), loop).result(timeout)

    def _offer(self, message: dict[str, Any], force: bool) -> None:
        if self._queue and not self._queue[-1][1]:
            self._queue[-1] = (message, force)  # a newer snapshot supersedes an unsent progress one
        else:
            self._queue.append((message, force))
        if not self._flushing:
            self._flushing = True
            asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        layer = get_channel_layer()
        try:
            while self._queue:
                message, force = self._queue[0]
                wait = MIN_INTERVAL_S - (time.monotonic() - self._last_sent)
                if wait > 0 and not force:
                    await asyncio.sleep(wait)
                    continue  # the head may have been superseded meanwhile
                self._queue.pop(0)
                self._last_sent = time.monotonic()
                try:
                    await asyncio.wait_for(layer.group_send(GROUP, message), SEND_TIMEOUT_S)
                except Exception as exc:  # Redis down: the load goes on, the DB stays the truth
                    log.warning("group_send failed: %r", exc)
        finally:
            self._flushing = False


publisher = Publisher()
