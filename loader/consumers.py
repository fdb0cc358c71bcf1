"""The websocket: join the group, send the current state first, then forward every snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from . import watcher
from .events import GROUP, publisher
from .selectors import loader_state


class LoaderConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        if settings.MACTUNER_REQUIRE_STAFF:
            user = self.scope.get("user")
            if not (user and user.is_authenticated and user.is_staff):
                await self.close(code=4403)
                return
        publisher.bind_loop(asyncio.get_running_loop())
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "snapshot", **await database_sync_to_async(loader_state)()})
        watcher.attach()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)
        watcher.detach()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The socket is read-only; a client may ask for the state again (e.g. after sleep).
        if isinstance(content, dict) and content.get("type") == "refresh":
            await self.send_json({"type": "snapshot", **await database_sync_to_async(loader_state)()})

    async def loader_snapshot(self, event: dict[str, Any]) -> None:
        await self.send_json(event["state"])
