"""This process's own state: who it is, the model slot it holds, the cancel tokens of its loads.

Only state that cannot live in the database is here (a model in memory, a thread's cancel
flag). Everything other processes must know is mirrored in ``ServerProcess`` by the services.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from .pipeline import ModelSlot

HOST = socket.gethostname()
PID = os.getpid()
SLOT = ModelSlot()


@dataclass
class Identity:
    """Where other processes reach this one; ``channel`` is set once the agent listens."""

    host: str = HOST
    pid: int = PID
    channel: str = ""
    # A server records what it holds; the CLI (whose model dies with it) turns this off.
    serving: bool = True


IDENTITY = Identity()


@dataclass
class CancelTokens:
    """job id → the Event its load thread checks; set by the one cancel route (services.job_cancel)."""

    _tokens: dict[int, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, job_id: int) -> threading.Event:
        with self._lock:
            return self._tokens.setdefault(job_id, threading.Event())

    def close(self, job_id: int) -> None:
        with self._lock:
            self._tokens.pop(job_id, None)

    def fire(self, job_id: int) -> bool:
        with self._lock:
            token = self._tokens.get(job_id)
        if token is not None:
            token.set()
        return token is not None

    def running(self) -> set[int]:
        with self._lock:
            return set(self._tokens)


TOKENS = CancelTokens()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
