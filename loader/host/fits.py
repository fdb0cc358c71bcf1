"""The web side's handle on the host's fit estimates: ask without waiting long, keep the answers.

``GET /api/fit`` must answer in well under a second whatever the host is doing. So an ask is sent
only to a live host that runs no load or generation (``Host.busy``), waits at most ``wait_s`` for
the host's frames, and the answer is whatever is known for that (device, dtype) by then: the
latest figures the host sent, ``pending`` while it is still working. A host that is not started
is never started from here (``MACTUNER_WARM_IMPORTS=0`` spawns it at the first load). The frames
arrive on the host's reader thread (``deliver``); the board only keeps them.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loader.host import protocol

if TYPE_CHECKING:
    from loader.host.supervisor import Host

ASK_TIMEOUT_S = 60.0  # an ask with no final frame by then is lost (its host died or was recycled)
READY, BUSY, STARTING, STOPPED = "ready", "busy", "starting", "stopped"


@dataclass
class Known:
    """What the host said last for one (device, dtype)."""

    target: str | None = None
    available: int | None = None
    freed: int = 0
    at: float = 0.0  # wall clock of the figures
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {"need"} or {"error"}
    error: dict[str, Any] | None = None  # the device itself could not be used


@dataclass
class FitView:
    """One answer: what is known, whether the host is still working on it, and the host's state."""

    known: Known
    pending: bool
    host: str


@dataclass
class _Ask:
    key: tuple[str, str]
    pid: int
    sent: float


class FitBoard:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._asks: dict[int, _Ask] = {}
        self._known: dict[tuple[str, str], Known] = {}

    def deliver(self, message: dict[str, Any]) -> None:
        """A ``fit`` frame from the host (its reader thread)."""
        with self._cond:
            ask = self._asks.get(message["id"])
            if ask is None:
                return  # an ask we gave up on
            known = self._known.setdefault(ask.key, Known())
            if "target" in message:
                known.target, known.at = message["target"], time.time()
                known.available, known.freed = int(message["available"]), int(message.get("freed") or 0)
            known.error = message.get("error")
            known.results.update(message["results"])
            if message.get("done"):
                del self._asks[message["id"]]
            self._cond.notify_all()

    def ask(self, host: Host, models: list[dict[str, Any]], device: str, dtype: str, *, allow_remote_code: bool,
            wait_s: float) -> FitView:  # fmt: skip
        """Ask the host about ``models`` ({name, path, bases}) unless it is busy or not started;
        wait at most ``wait_s`` for its answer, then say what is known."""
        key = (device, dtype)
        process = host._process
        alive = process is not None and not process.dead.is_set() and not process.killed_for
        state = STOPPED if not alive else BUSY if host.busy else READY if host.ready else STARTING
        with self._cond:
            now = time.monotonic()
            pid = process.pid if alive and process is not None else None  # a dead host answers no ask
            for fit_id, old in list(self._asks.items()):
                if old.pid != pid or now - old.sent > ASK_TIMEOUT_S:
                    del self._asks[fit_id]
            mine = next((i for i, a in self._asks.items() if a.key == key), None)
            if mine is None and state in (READY, STARTING) and process is not None:
                mine = next(self._ids)
                self._asks[mine] = _Ask(key, process.pid, now)
                request = {"device": device, "dtype": dtype, "allow_remote_code": allow_remote_code, "models": models}
                try:
                    sent = process.send({"op": "fit", "id": mine, "request": request})
                except protocol.ProtocolError:  # a list too long for one frame: no estimates, said as unknown
                    sent = False
                if not sent:
                    del self._asks[mine]
                    mine = None
            deadline = now + wait_s
            while mine is not None and mine in self._asks and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            known = self._known.get(key) or Known()
            view = Known(known.target, known.available, known.freed, known.at, dict(known.results), known.error)
            return FitView(view, pending=mine is not None and mine in self._asks, host=state)
