"""The one throttle and the one publisher every message goes through.

``Throttle`` decides when a job's progress goes out (stage changes and final states at once,
otherwise at most every ``INTERVAL_S``; the row behind each is written by the job thread).
``Publisher`` carries every message (the runner's,
the watcher's, the actions') to the channel layer without blocking the caller: a thread only
calls ``loop.call_soon_threadsafe``; the mailbox is touched on the loop alone. The server's
loop is bound once at start-up; a process without one (the CLI on Redis) gets a private loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

GROUP = "loader"
EVENT_TYPE = "loader.snapshot"
INTERVAL_S = 0.1
SEND_TIMEOUT_S = 5.0
OBSERVER_BACKLOG = 256
log = logging.getLogger("loader.events")


class Throttle:
    """When a job's progress is persisted and published; one instance per running job."""

    def __init__(self, interval_s: float = INTERVAL_S, sent_stage: str = "") -> None:
        """``sent_stage``: a snapshot at this stage has just gone out (the first event may wait)."""
        self.interval_s = interval_s
        self.last = time.monotonic() if sent_stage else 0.0
        self.stage = sent_stage

    def due(self, stage: str) -> tuple[bool, bool]:
        """(send now?, is it a stage change?) — a stage change always goes out."""
        now = time.monotonic()
        changed = stage != self.stage
        if changed or now - self.last >= self.interval_s:
            self.last, self.stage = now, stage
            return True, changed
        return False, False


def milestone(state: dict[str, Any]) -> list[Any]:
    """What a viewer must see at once: which job, whether it is active, which model is loaded."""
    job, loaded = state.get("job") or {}, state.get("loaded") or {}
    return [job.get("id"), job.get("active"), job.get("state"), loaded.get("name")]


def snapshot_event(state: dict[str, Any]) -> dict[str, Any]:
    """The group message: the snapshot encoded once here, not once per connected consumer, with
    what the receiving relay needs to know about it, so it never decodes the text again."""
    return {
        "type": EVENT_TYPE, "text": json.dumps(state, ensure_ascii=False),
        "milestone": milestone(state), "emitted_at": state.get("emitted_at", 0.0),
    }  # fmt: skip


class Publisher:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        # Loop-only state: the pending group messages (an unsent progress one is superseded).
        self._mailbox: list[tuple[dict[str, Any], bool]] = []
        self._draining = False
        # Local observers (the server terminal's bars) see every snapshot, layer or not.
        self.observers: list[Callable[[dict[str, Any]], None]] = []
        self._observed: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=OBSERVER_BACKLOG)
        self._observer_thread: threading.Thread | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once by the start-up hook: the server's loop owns the in-memory layer."""
        self._loop = loop

    def _target(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            return loop
        layer = get_channel_layer()
        if layer is None or isinstance(layer, InMemoryChannelLayer):
            return None  # no server loop and a process-local layer: nobody can be listening
        with self._lock:
            if self._own_loop is None:
                self._own_loop = asyncio.new_event_loop()
                threading.Thread(target=self._own_loop.run_forever, name="loader-publisher", daemon=True).start()
        return self._own_loop

    def send(self, state: dict[str, Any], force: bool = True) -> None:
        """Hand a snapshot to the group; thread-safe, never blocks. ``force=False`` may be superseded."""
        if self.observers:
            self._observe(state)
        loop = self._target()
        if loop is None:
            return
        message = snapshot_event(state)
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._offer, message, force)

    def _observe(self, state: dict[str, Any]) -> None:
        """Observers run on their own thread: a terminal that blocks (a paused tty, a full pipe)
        loses frames, never the sender's time."""
        with self._lock:
            if self._observer_thread is None:
                self._observer_thread = threading.Thread(
                    target=self._run_observers, name="loader-observers", daemon=True
                )
                self._observer_thread.start()
        with contextlib.suppress(queue.Full):
            self._observed.put_nowait(state)

    def _run_observers(self) -> None:
        while True:
            state = self._observed.get()
            for observer in list(self.observers):
                try:
                    observer(state)
                except Exception:
                    log.exception("snapshot observer %r failed", observer)

    def send_to(self, channel: str, message: dict[str, Any]) -> None:
        """A direct message to one process's agent (unload, cancel)."""
        loop = self._target()
        if loop is None:
            return

        async def deliver() -> None:
            try:
                await asyncio.wait_for(get_channel_layer().send(channel, message), SEND_TIMEOUT_S)
            except Exception as exc:
                log.warning("send to %s failed: %r", channel, exc)

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(deliver(), loop)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until pending snapshots are sent (a CLI about to exit must not lose its last one)."""
        loop = self._target()
        if loop is None or loop is self._loop and loop.is_running() and _on_loop(loop):
            return

        async def drained() -> None:
            while self._mailbox or self._draining:
                await asyncio.sleep(0.01)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drained(), loop).result(timeout)

    def _offer(self, message: dict[str, Any], force: bool) -> None:
        if self._mailbox and not self._mailbox[-1][1]:
            self._mailbox[-1] = (message, force)
        else:
            self._mailbox.append((message, force))
        if not self._draining:
            self._draining = True
            asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        layer = get_channel_layer()
        try:
            while self._mailbox:
                message, _force = self._mailbox.pop(0)
                try:
                    await asyncio.wait_for(layer.group_send(GROUP, message), SEND_TIMEOUT_S)
                except Exception as exc:  # Redis down: the load goes on, the DB stays the truth
                    log.warning("group_send failed: %r", exc)
        finally:
            self._draining = False


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


publisher = Publisher()
