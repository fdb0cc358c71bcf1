"""The websocket: join the group, send the current state first, then forward every snapshot.

If the channel layer (Redis) is unreachable the socket still opens and gets the state from
the database, then polls it each second until the group can be joined: a viewer is never left
with a stale "로드 중..." because Redis blinked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from . import watcher
from .events import GROUP
from .selectors import loader_state

log = logging.getLogger("loader.consumers")
REJOIN_S = 1.0


class LoaderConsumer(AsyncJsonWebsocketConsumer):
    fallback: asyncio.Task[None] | None = None
    attached = False

    async def connect(self) -> None:
        if settings.MACTUNER_REQUIRE_STAFF:
            user = self.scope.get("user")
            if not (user and user.is_authenticated and user.is_staff):
                await self.close(code=4403)
                return
        joined = await self._join()
        await self.accept()
        await self.send_state()
        watcher.attach()
        self.attached = True
        if not joined:
            self.fallback = asyncio.get_running_loop().create_task(self._poll_until_joined())

    async def _join(self) -> bool:
        for _attempt in range(2):  # the first command on a pool whose Redis restarted fails once
            try:
                await self.channel_layer.group_add(GROUP, self.channel_name)
                return True
            except Exception as exc:
                log.warning("group_add failed: %r", exc)
        return False

    async def _poll_until_joined(self) -> None:
        while True:
            await asyncio.sleep(REJOIN_S)
            await self.send_state()
            if await self._join():
                return

    async def send_state(self) -> None:
        await self.send_json(await database_sync_to_async(loader_state)())

    async def disconnect(self, code: int) -> None:
        if self.fallback is not None:
            self.fallback.cancel()
        if not self.attached:
            return
        with contextlib.suppress(Exception):
            await self.channel_layer.group_discard(GROUP, self.channel_name)
        watcher.detach()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        """Ignore what is not JSON text (binary frames, garbage): a bad client must not crash its socket."""
        if not text_data:
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The socket is read-only; a client may ask for the state again (e.g. after sleep).
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self.send_state()

    async def loader_snapshot(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
