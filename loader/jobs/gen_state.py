"""The server's current generation, as every surface shows it (one at a time per server).

Its own leaf module so the selectors (the snapshot a late joiner gets first) and the generation
driver (``generations``) share it without importing each other. Kept in memory: a generation is
seconds long and belongs to this process's model host; history keeps what matters of it on the
load's row (``LoadJob.first_token_s``).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_current: dict[str, Any] | None = None
_ended = threading.Event()
_ended.set()


def current() -> dict[str, Any] | None:
    with _lock:
        return dict(_current) if _current is not None else None


def begin(snapshot: dict[str, Any]) -> bool:
    """Make ``snapshot`` the current generation unless one is running; False when one is."""
    global _current
    with _lock:
        if _current is not None and _current.get("state") == "running":
            return False
        _current = dict(snapshot)
        _ended.clear()
        return True


def update(gen_id: int, **fields: Any) -> dict[str, Any] | None:
    """Change the current generation (if it is still ``gen_id``); returns the new snapshot."""
    with _lock:
        if _current is None or _current.get("id") != gen_id:
            return None
        _current.update(fields)
        if _current.get("state") != "running":
            _ended.set()
        return dict(_current)


def wait_ended(timeout: float) -> bool:
    return _ended.wait(timeout)
