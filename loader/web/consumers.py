"""The websocket: send the current state first, then forward every snapshot.

One ``Relay`` per serving loop is this process's only member of the channel-layer group; it
receives each snapshot once and writes its (already encoded) text to every local viewer in one
pass. A consumer per viewer in the group would cost one layer message, one task wake-up and (in
Channels' dispatch) one hop through Django's single sync thread per viewer per snapshot, and the
in-memory layer sweeps every channel on every receive: with 1,500 viewers that made a 0.2 s load
take 12 s and ``/api/status`` answer in seconds. A write never waits for a viewer: what a viewer
does not read piles up in its own socket buffer, which ``server_guards`` bounds (past the bound
the socket is closed).

A viewer gets the state first: it is registered (snapshots arriving meanwhile are kept, the
newest only), the state is read, sent, then the kept snapshot if it is newer. Joiners arriving
together share one read that began after they registered. If the channel layer (Redis) is
unreachable, the relay reads the state from the database each second for all its viewers until
it can join the group: a viewer is never left with a stale "로드 중..." because Redis blinked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from loader.jobs.publisher import EVENT_TYPE, GROUP, snapshot_event
from loader.jobs.selectors import loader_state
from loader.web import server_guards, watcher
from loader.web.offloop import off_loop

log = logging.getLogger("loader.consumers")
REJOIN_S = 1.0
YIELD_EVERY = 200  # viewers written between two returns to the loop (other requests are served)
PACE = 2.0  # a pass of d seconds is paid for with 2·d of rest: writing to a crowd takes ≤ 1/3 of the loop
SENDS_PER_S = 6000  # progress frames per second over all viewers, on average (starts and ends are not held)
BURST_S = 0.25  # how far passes may run ahead of that average (a stage change and the update after it)


class Pace:
    """When the next pass over the viewers may start: a rate limiter with a burst allowance (GCRA).

    A pass of d seconds costs d + max(PACE·d, viewers / SENDS_PER_S), the pass and the rest
    after it; passes keep to that on average and may run up to ``BURST_S`` ahead of it. Small audiences get every snapshot the
    publisher sends (10 a second); 1,500 viewers get about 3.5 progress updates a second.
    Without the allowance each pass waited its whole cost after the previous one: at 500
    viewers (83 ms a pass) the update after a stage change waited ~80-95 ms and the next ones
    a little less each, although 10 updates a second fit the pace (p99 at 500 viewers, median
    of six runs 91 → 70 ms, bench/results/cpu-event_latency-s14.txt and -event_trace-s14.txt).
    """

    def __init__(self) -> None:
        self.paced_to = 0.0  # where the pace stands; a pass may start once within BURST_S of now

    def delay(self, now: float) -> float:
        return self.paced_to - BURST_S - now

    def paid(self, started: float, spent: float, viewers: int) -> None:
        self.paced_to = max(self.paced_to, started) + spent + max(spent * PACE, viewers / SENDS_PER_S)


class Relay:
    def __init__(self) -> None:
        self.viewers: dict[LoaderConsumer, None] = {}  # insertion-ordered set
        self.task: asyncio.Task[None] | None = None
        self.pump: asyncio.Task[None] | None = None
        self._newest: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._last_key: tuple[Any, ...] | None = None
        self._read: tuple[float, asyncio.Future[dict[str, Any]]] | None = None

    def add(self, viewer: LoaderConsumer) -> None:
        self.viewers[viewer] = None
        if self.task is None or self.task.done():
            loop = asyncio.get_running_loop()
            self.task, self.pump = loop.create_task(self._run()), loop.create_task(self._pump())

    def discard(self, viewer: LoaderConsumer) -> None:
        self.viewers.pop(viewer, None)
        if not self.viewers and self.task is not None:
            self.task.cancel()
            if self.pump is not None:
                self.pump.cancel()
            self.task = self.pump = None

    async def state(self, since: float) -> dict[str, Any]:
        """The current state, from a read that began at or after ``since`` (shared by joiners)."""
        current = self._read
        if current is None or current[0] < since or current[1].done() and current[1].exception():
            current = self._read = (time.monotonic(), asyncio.ensure_future(off_loop(loader_state)))
        return await asyncio.shield(current[1])

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a snapshot (a ``snapshot_event``) for the next pass; one not yet sent is replaced."""
        self._newest = message
        key = tuple(message["milestone"])
        if key != self._last_key:  # a job started or ended, a model came or went: no waiting
            self._last_key = key
            self._urgent.set()
        self._wake.set()

    async def _pump(self) -> None:
        """Passes over the viewers, paced (``Pace``) so a crowd cannot take the loop from the
        requests; starts and ends of jobs go at once."""
        pace = Pace()
        while True:
            await self._wake.wait()
            delay = pace.delay(time.monotonic())
            if delay > 0 and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), delay)
            self._wake.clear()
            self._urgent.clear()
            newest, self._newest = self._newest, None
            if newest is None:
                continue
            started = time.monotonic()
            await self.fan_out(newest)
            pace.paid(started, time.monotonic() - started, len(self.viewers))

    async def fan_out(self, event: dict[str, Any]) -> None:
        text: str = event["text"]
        prepared: Any = None
        message = {"type": "websocket.send", "text": text}
        for i, viewer in enumerate(list(self.viewers)):
            if not viewer.ready:
                viewer.kept = event
            elif viewer.socket is not None:  # daphne: the frame is built once for everyone
                prepared = prepared or server_guards.prepare(text)
                try:
                    server_guards.send_prepared(viewer.socket, prepared)
                except Exception as exc:  # a socket closing under us must not stop the pass
                    log.debug("send to a viewer failed: %r", exc)
            else:
                with contextlib.suppress(Exception):
                    await viewer.base_send(message)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)

    async def _run(self) -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        joined = False
        try:
            while True:
                if not joined:
                    joined = await _join(layer, channel)
                    if not joined:  # poll for everyone until the group can be joined
                        with contextlib.suppress(Exception):
                            self.offer(snapshot_event(await self.state(time.monotonic())))
                        await asyncio.sleep(REJOIN_S)
                        continue
                try:
                    message = await layer.receive(channel)
                except Exception as exc:  # Redis went away: poll, then join again
                    log.warning("relay receive failed: %r", exc)
                    joined = False
                    continue
                if message.get("type") == EVENT_TYPE and "milestone" in message:
                    self.offer(message)
        finally:
            with contextlib.suppress(Exception):
                await layer.group_discard(GROUP, channel)


async def _join(layer: Any, channel: str) -> bool:
    for _attempt in range(2):  # the first command on a pool whose Redis restarted fails once
        try:
            await layer.group_add(GROUP, channel)
            return True
        except Exception as exc:
            log.warning("group_add failed: %r", exc)
    return False


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Relay] = weakref.WeakKeyDictionary()


def relay() -> Relay:
    loop = asyncio.get_running_loop()
    if loop not in _relays:
        _relays[loop] = Relay()
    return _relays[loop]


class LoaderConsumer(AsyncWebsocketConsumer):
    # No channel of its own: the relay is the group member (see the module docstring).
    channel_layer_alias = "loader.no-channel-per-viewer"
    ready = False
    attached = False
    kept: dict[str, Any] | None = None  # the newest snapshot event that arrived while joining
    socket: Any = None  # daphne's connection, when the server is daphne (``server_guards``)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale DB connections through Django's one sync thread before every
        # message; this consumer reads only through ``off_loop`` (fresh connections), so skip it.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        if settings.MACTUNER_REQUIRE_STAFF:
            user = self.scope.get("user")
            if not (user and user.is_authenticated and user.is_staff):
                await self.close(code=4403)
                return
        await self.accept()
        self.socket = server_guards.websocket_of(self.scope)
        since = time.monotonic()
        hub = relay()
        hub.add(self)
        self.attached = True
        watcher.attach()
        state = await hub.state(since)
        await self.send(text_data=json.dumps(state, ensure_ascii=False))
        kept, self.kept, self.ready = self.kept, None, True
        if kept is not None and kept["emitted_at"] > state["emitted_at"]:
            await self.send(text_data=kept["text"])

    async def send_state(self) -> None:
        await self.send(text_data=json.dumps(await relay().state(time.monotonic()), ensure_ascii=False))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # Channels' version also hops through the sync thread to close DB connections: skipped
        # for the same reason as in ``dispatch`` (a crowd dropped at once would queue there).
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        if not self.attached:
            return
        self.attached = False
        relay().discard(self)
        watcher.detach()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """Ignore what is not JSON text (binary frames, garbage): a bad client must not crash its socket."""
        if not text_data:
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # garbage, or nesting deep enough to exhaust the stack
            return
        # The socket is read-only; a client may ask for the state again (e.g. after sleep).
        if isinstance(content, dict) and content.get("type") == "refresh" and self.ready:
            await self.send_state()
