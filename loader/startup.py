"""What a server does once its event loop runs: the explicit start-up hook.

``ServerStartup`` wraps the ASGI application. Under daphne the hook is scheduled on daphne's
loop as soon as the module is imported, so it runs when the server starts (not at the first
request); under any other ASGI server it runs on the first call. It binds the publisher to the
serving loop, starts this process's agent (its row, channel and heartbeat), raises the open-file
limit, and in background threads reaps jobs a killed server left active and warms the heavy
imports (``warming``: without holding up the requests answered meanwhile). Every failure is
logged; none stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection

from . import warming
from .events import publisher
from .terminal import terminal

log = logging.getLogger("loader.startup")
_started_on: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()
publisher.observers.append(terminal.show)  # FAQ Q10: a server's terminal shows every load it sees


IMPORTS_READY = "imports ready in"  # the log line operators (and the test harness) wait for


def raise_open_file_limit() -> None:
    """Many viewers and slow clients each hold a descriptor; macOS starts at 256."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 65536
        if sys.platform == "darwin":
            target = min(target, 10240)  # OPEN_MAX: macOS refuses more for setrlimit
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-file limit raised from %s to %s", soft, target)
    except (ImportError, ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit: %r", exc)


async def start_on_this_loop() -> None:
    """Idempotent per loop: the loop that serves is the one every async service binds to."""
    global _started_on
    loop = asyncio.get_running_loop()
    with _lock:
        if _started_on is loop:
            return
        _started_on = loop
    publisher.bind_loop(loop)
    raise_open_file_limit()
    threading.Thread(target=_reap, name="loader-reap", daemon=True).start()
    if settings.MACTUNER_WARM_IMPORTS:
        threading.Thread(target=_warm, name="loader-warm-imports", daemon=True).start()
    try:
        from . import agent

        await agent.start()
    except Exception:
        log.exception("the process agent did not start: other servers cannot reach this one")


def schedule_on_daphne() -> None:
    """Under daphne its loop exists (not yet running) when the ASGI module is imported."""
    server = sys.modules.get("daphne.server")
    if server is not None:
        from .server_guards import install

        install()  # before daphne builds its factories: limits it has no setting for
    loop = getattr(server, "twisted_loop", None)
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(start_on_this_loop(), loop=loop))


class ServerStartup:
    """ASGI wrapper: make sure the start-up hook ran on the loop serving this call."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if _started_on is not asyncio.get_running_loop():
            await start_on_this_loop()
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        with warming.REQUESTS.answering():  # the imports warming meanwhile give way (``warming``)
            return await self.app(scope, receive, send)


def _reap() -> None:
    from . import services

    try:
        reaped = services.job_reap()
        if reaped:
            log.warning("marked orphaned jobs %s as interrupted", reaped)
    except Exception:
        log.exception("reaping orphaned jobs failed (is the database migrated?)")
    finally:
        connection.close()
    _read_catalogs()


def _read_catalogs() -> None:
    """Read the page's languages' message catalogs once, here: ``LocaleMiddleware`` activates them
    on the event loop (``loader.middleware``), where the first read of the .mo files would stall
    every request and socket of the server for a moment."""
    from django.utils import translation

    try:
        for code, _name in settings.LANGUAGES:
            with translation.override(code):
                translation.gettext("")
    except Exception:
        log.exception("reading the message catalogs failed (the first request of a language reads them)")


def _warm() -> None:
    from .process import SLOT

    started = time.monotonic()
    if warming.warm(is_idle=lambda: not SLOT.busy and SLOT.loaded is None):
        log.info("%s %.1f s (torch, transformers)", IMPORTS_READY, time.monotonic() - started)
