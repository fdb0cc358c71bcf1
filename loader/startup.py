"""What a server does once at start: reap jobs a killed server left active, warm the imports."""

from __future__ import annotations

import gc
import logging
import threading

from django.conf import settings
from django.db import connection

log = logging.getLogger("loader.startup")


def on_server_start() -> None:
    # In a thread: the ASGI module may be imported inside a running event loop.
    reaper = threading.Thread(target=_reap, name="loader-reap", daemon=True)
    reaper.start()
    reaper.join(30)
    if settings.MACTUNER_WARM_IMPORTS:
        threading.Thread(target=_warm, name="loader-warm-imports", daemon=True).start()


def _reap() -> None:
    from . import services

    try:
        reaped = services.job_reap()
        if reaped:
            log.warning("marked orphaned jobs %s as interrupted", reaped)
    except Exception as exc:  # no table yet (before migrate): nothing to reap
        log.info("reap skipped: %r", exc)
    finally:
        connection.close()


def _warm() -> None:
    from .pipeline.resolve import warm_imports

    try:
        warm_imports()
    except Exception:
        log.exception("warming imports failed (the first load will import instead)")
    # torch + transformers leave millions of long-lived objects; a full collection over them
    # stalls the event loop ~0.2 s (late websocket updates). Freeze them out of the collector,
    # unless a load already started: its model must stay collectable.
    from .runner import SLOT

    if not SLOT.busy and SLOT.loaded is None:
        gc.freeze()
