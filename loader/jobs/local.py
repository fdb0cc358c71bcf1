"""This process's own state: who it is, its model host, the cancel tokens of its loads.

Only state that cannot live in the database is here (the handle on the host process that holds
the model, a job thread's cancel flag). Everything other processes must know is mirrored in
``ServerProcess`` by the services. The host is spawned by whoever first needs it (the server's
start-up hook, ``loadmodel``), never by importing this module.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from loader.host.supervisor import Host

HOSTNAME = socket.gethostname()
PID = os.getpid()
MODEL_HOST = Host()


@dataclass
class Identity:
    """Where other processes reach this one; ``channel`` is set once the agent listens."""

    host: str = HOSTNAME
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
