"""The middleware stack, async-native under ASGI: WhiteNoise that stays on the loop, and Django's
header-only middleware run inline (``_OnLoop``).

WhiteNoise's middleware is sync-only. Under ASGI one sync-only middleware makes Django run it,
and so every request through it, in its single sync thread (``thread_sensitive``): the async
status and list views would wait there behind any slow sync view, exactly what they are async
to avoid. This subclass serves static files as WhiteNoise does (looked up off the loop) and
passes every other request straight on without leaving the event loop.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponseBase
from django.middleware.common import CommonMiddleware
from django.middleware.locale import LocaleMiddleware
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


class _OnLoop:
    """Run a ``MiddlewareMixin``'s hooks inline on the event loop in ASGI mode.

    Under ASGI, Django's ``MiddlewareMixin`` calls every ``process_request`` and
    ``process_response`` through ``sync_to_async``: a thread hop per hook (18 for one
    ``POST /api/load`` with Django's classes), each a GIL hand-off between the loop and Django's
    sync thread. With a load running (a Python-bound thread) every hop waits for the GIL, so a
    click's answer and the load itself paid for them. The hooks of these middleware only look at
    headers, cookies and lazy objects (no database, no files), so they run where they are called;
    a response hook that may touch the database (``writes``: a modified session's save, messages
    that may be kept in the session) still goes to the sync thread; the message catalogs
    ``Locale`` activates are read at start-up, off the loop (``startup``). In WSGI mode, and for
    Django's test client, nothing changes.

    Security, CSRF and X-Frame-Options stay Django's own classes: ``check --deploy`` finds them
    by their dotted names (and skips its HSTS/SSL checks when it does not); that check is worth
    more than their six hops.
    """

    get_response: Any

    async def __acall__(self, request: HttpRequest) -> Any:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if not hasattr(self, "process_response"):
            return response
        if self.writes(request):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)

    def writes(self, request: HttpRequest) -> bool:
        """Whether this request's response hook may touch the database."""
        return False


class Sessions(_OnLoop, SessionMiddleware):
    def writes(self, request: HttpRequest) -> bool:  # saves the session
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class Locale(_OnLoop, LocaleMiddleware):
    pass


class Common(_OnLoop, CommonMiddleware):
    pass


class Authentication(_OnLoop, AuthenticationMiddleware):
    pass


class Messages(_OnLoop, MessageMiddleware):
    def writes(self, request: HttpRequest) -> bool:  # may store them in the session
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)
