"""What a server does once its event loop runs: the explicit start-up hook.

``ServerStartup`` wraps the ASGI application. Under daphne the hook is scheduled on daphne's
loop as soon as the module is imported, so it runs when the server starts (not at the first
request); under any other ASGI server it runs on the first call. It binds the publisher to the
serving loop, starts this process's agent (its row, channel and heartbeat) and the database watcher
(for the terminal: a `loadmodel` run shows there without Redis and without a page), raises the open-file
limit, spawns the model host (which imports torch and transformers in its own process, so the
first click does not wait for a cold import and the web process never imports them), and in a
background thread reaps jobs a killed server left active. Every failure is logged; none stops
the server.
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

from loader.host.supervisor import READY_LINE
from loader.jobs.publisher import publisher
from loader.web.terminal import terminal

log = logging.getLogger("loader.startup")
_started_on: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


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


async def start_on_this_loop(serving: bool = False) -> None:
    """Idempotent per loop: the loop that serves is the one every async service binds to."""
    global _started_on
    loop = asyncio.get_running_loop()
    with _lock:
        if _started_on is loop:
            return
        _started_on = loop
    publisher.bind_loop(loop)
    publisher.observers.append(terminal.show)  # FAQ Q10: a server's terminal shows every load it sees
    raise_open_file_limit()
    threading.Thread(target=_reap, name="loader-reap", daemon=True).start()
    from loader.jobs.local import MODEL_HOST

    MODEL_HOST.on_lost = _host_lost
    if settings.MACTUNER_WARM_IMPORTS:
        threading.Thread(target=_start_host, name="loader-host-start", daemon=True).start()
    try:
        from loader.web import agent

        await agent.start()
    except Exception:
        log.exception("the process agent did not start: other servers cannot reach this one")
    if serving:
        from loader.web import watcher

        # The terminal is a viewer for as long as the server runs: without Redis a `loadmodel` run
        # is heard only through the database, and the terminal must show it with no page open.
        watcher.attach()


def schedule_on_daphne() -> None:
    """Under daphne its loop exists (not yet running) when the ASGI module is imported."""
    server = sys.modules.get("daphne.server")
    if server is not None:
        from loader.web.server_guards import install

        install()  # before daphne builds its factories: limits it has no setting for
    loop = getattr(server, "twisted_loop", None)
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(start_on_this_loop(serving=True), loop=loop))


class ServerStartup:
    """ASGI wrapper: make sure the start-up hook ran on the loop serving this call."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if _started_on is not asyncio.get_running_loop():
            await start_on_this_loop()
        return await self.app(scope, receive, send)


def _reap() -> None:
    from loader.jobs import services

    try:
        reaped = services.job_reap()
        if reaped:
            log.warning("marked orphaned jobs %s as interrupted", reaped)
    except Exception:
        log.exception("reaping orphaned jobs failed (is the database migrated?)")
    finally:
        connection.close()


def _host_lost(model: dict[str, Any], why: str) -> None:
    """The host died holding a model outside a load: the dashboards say no model, and why."""
    from loader.jobs import servers

    try:
        servers.process_record_lost(model=model, why=why)
    except Exception:
        log.exception("could not record the loss of the model %r", model.get("name"))
    finally:
        connection.close()


def _start_host() -> None:
    from loader.jobs.local import MODEL_HOST

    started = time.monotonic()
    process = MODEL_HOST.start()
    if process.ready.wait(600):
        log.info("%s %.1f s (pid %s; torch, transformers)", READY_LINE, time.monotonic() - started, process.pid)
