"""Blocking reads run off the event loop, in pools of their own.

``database_sync_to_async`` and Django's sync views share one thread (``thread_sensitive``): a
status request would wait behind every other sync call (a slow list, a hundred websocket
joins). The reads here run in small dedicated pools instead, each call with its own fresh
connection closed afterwards (``close_old_connections``, as Django does per request), and with
the caller's context (language, settings overrides) copied in. The catalog has its own pool so
a slow disk never holds the status and job reads.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")
READ_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="loader-read")
CATALOG_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loader-catalog-read")


def _fresh_connection(fn: Callable[..., T]) -> Callable[..., T]:
    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return run


async def off_loop(fn: Callable[..., T], *args: Any, pool: ThreadPoolExecutor = READ_POOL) -> T:
    """Run ``fn(*args)`` in ``pool``; the loop serves other requests meanwhile."""
    return await sync_to_async(_fresh_connection(fn), thread_sensitive=False, executor=pool)(*args)
