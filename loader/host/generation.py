"""The web side's handle on a generation in the model host: follow it, cancel it, kill it if stuck.

A generation is driven like a load (``supervisor.Host``): one operation in the host at a time
(the same lock), the host's frames read into a mailbox, a cancel honoured between tokens or,
past the grace, answered by killing the host. Killing it takes the model with it: the outcome
says so (``killed``) and the caller records the model as lost, so the page tells the user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loader.host.supervisor import Host

log = logging.getLogger("loader.host")
RUNNING = "running"
ENDED = ("done", "failed", "cancelled")


class NoModel(Exception):
    """The host holds no model (never loaded, unloaded, or lost)."""


@dataclass
class GenOutcome:
    state: str  # done | failed | cancelled
    result: dict[str, Any] = field(default_factory=dict)  # text, tokens, tokens_per_s, first_token_at…
    error: dict[str, Any] | None = None
    killed: str = ""  # the host was killed (stuck) or died: its model is gone
    model: dict[str, Any] | None = None  # the model the host held when the generation began


def run_generation(
    host: Host, gen_id: int, spec: dict[str, Any], *, on_update: Callable[[dict[str, Any]], None],
    should_cancel: Callable[[], bool], grace_s: float,
) -> GenOutcome:  # fmt: skip
    """Generate in the host; raises ``HostBusy`` while a load runs, ``NoModel`` without a model."""
    from loader.host.supervisor import HostBusy, _Mailbox

    if not host._load_lock.acquire(blocking=False):
        raise HostBusy()
    try:
        process, model = host._process, host.model
        if process is None or process.dead.is_set() or model is None:
            raise NoModel()
        mailbox = _Mailbox()
        with host._lock:
            host._following = (process, mailbox)
        try:
            if not process.send({"op": "generate", "id": gen_id, "request": spec}):
                mailbox.put({"t": "died", "code": "host_died", "signal": "socket closed", "killed_for": ""})
            outcome = _follow(host, process, gen_id, mailbox, on_update, should_cancel, grace_s)
        finally:
            with host._lock:
                host._following = None
        outcome.model = model
        return outcome
    finally:
        host._load_lock.release()


def _follow(
    host: Host, process: Any, gen_id: int, mailbox: Any, on_update: Callable[[dict[str, Any]], None],
    should_cancel: Callable[[], bool], grace_s: float,
) -> GenOutcome:  # fmt: skip
    cancel_at = 0.0
    while True:
        message = mailbox.get(0.05)
        if message is None and process.dead.is_set():
            message = mailbox.get(0.5) or {"t": "died", "signal": "exited", "killed_for": process.killed_for}
        if message is not None:
            kind = message.get("t")
            if kind == "gen" and message.get("id") == gen_id:
                if message["state"] == RUNNING:
                    on_update(message)
                elif message["state"] in ENDED:
                    result = {k: v for k, v in message.items() if k not in ("t", "id", "state", "error")}
                    return GenOutcome(message["state"], result, message.get("error"))
            elif kind in ("died", "garbage"):
                host._forget_model()
                if kind == "garbage":
                    host.recycle("garbage")
                why = "cancel" if cancel_at else str(message.get("signal") or kind)
                state = "cancelled" if cancel_at else "failed"
                return GenOutcome(state, error={"code": "host_died", "signal": why}, killed=why)
        if not cancel_at and should_cancel():
            cancel_at = time.monotonic()
            process.send({"op": "gen_cancel", "id": gen_id})
        if cancel_at and time.monotonic() - cancel_at > grace_s:
            log.warning("generation %s: the host did not stop %.1f s after cancel; killing it", gen_id, grace_s)
            host.recycle("cancel")  # the model goes with the process; a fresh host imports meanwhile
            return GenOutcome("cancelled", killed="cancel")
