"""WhiteNoise that stays on the event loop under ASGI.

WhiteNoise's middleware is sync-only. Under ASGI one sync-only middleware makes Django run it,
and so every request through it, in its single sync thread (``thread_sensitive``): the async
status and list views would wait there behind any slow sync view, exactly what they are async
to avoid. This subclass serves static files as WhiteNoise does (looked up off the loop) and
passes every other request straight on without leaving the event loop.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFiles(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(get_response, *args, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    def _static(self, request: HttpRequest) -> HttpResponseBase | None:
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        return self.serve(static_file, request) if static_file is not None else None

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info.startswith(self.static_prefix):
            response = await sync_to_async(self._static, thread_sensitive=False)(request)
            if response is not None:
                return response
        return await self.get_response(request)
