"""Middleware that stays on the event loop under ASGI: WhiteNoise, and the Content-Security-Policy.

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
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware

CSP_HEADER = "Content-Security-Policy"


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


def csp_policy(directives: dict[str, list[str]], ws_host: str | None = None) -> str:
    """The header value; ``ws_host`` adds this host's websocket origins to ``connect-src``.

    ``'self'`` covers a same-origin ``ws://`` only in CSP level 3 browsers (older Safari refuses
    the page's socket under it); naming the host keeps the socket working there without the
    scheme-wide ``ws:`` that would let an injected script send data to any host.
    """
    parts = []
    for name, sources in directives.items():
        values = list(sources)
        if name == "connect-src" and ws_host:
            values += [f"ws://{ws_host}", f"wss://{ws_host}"]
        parts.append(" ".join([name, *values]))
    return "; ".join(parts)


class ContentSecurityPolicy:
    """Sets ``settings.SECURE_CSP`` on every response: a second wall behind the templates' escaping.

    The page and the admin load scripts and styles only from the app's static files, so a name
    or message that slipped past escaping still cannot run script or restyle the page. Django
    5.2 has no CSP support; ``SECURE_CSP`` has the shape of Django 6's setting so its
    ``ContentSecurityPolicyMiddleware`` can replace this class. Written by hand rather than with
    ``MiddlewareMixin``, whose async path runs every response through the single sync thread.

    Under ``DEBUG`` the technical error pages (inline styles and scripts) are left without the
    header so a developer can still read them; served pages always carry it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.directives: dict[str, list[str]] = dict(getattr(settings, "SECURE_CSP", {}))
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self._stamp(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self._stamp(request, await self.get_response(request))

    def _stamp(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not self.directives or CSP_HEADER in response:
            return response
        if settings.DEBUG and response.status_code >= 400:
            return response
        response[CSP_HEADER] = csp_policy(self.directives, _websocket_host(request))
        return response


def _websocket_host(request: HttpRequest) -> str | None:
    """The validated ``host[:port]`` the page opens its socket to; None where CSP cannot name it.

    CSP host sources have no syntax for IPv6 literals (``[::1]:8000``); there ``'self'`` alone
    must do (CSP level 3 browsers match it to the page's own ``ws://`` origin).
    """
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return None if host.startswith("[") else host
