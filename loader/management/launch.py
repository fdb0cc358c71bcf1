"""``loadmodel``'s first tenth of a second, before Django is set up (``manage.py`` calls this).

Setting Django up (with daphne and Channels installed) takes about a second on an idle machine;
the user must not stare at nothing meanwhile, and a Ctrl-C then must not end in a traceback.
So, first thing: Ctrl-C/SIGTERM exit 130 quietly (taking the host along), the model host is
spawned (it imports torch while Django sets up), and a ticking "importing libraries" line is
drawn until the command's own bars take over (``stop_ticker``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from loader.pipeline.events import CANCELLED_MESSAGE, Stage, stage_message
from loader.pipeline.i18n import env_language

TICK_S = 0.25
_ticker: threading.Event | None = None
_lock = threading.Lock()


def language(argv: list[str]) -> str:
    """``--lang`` when given (before Django's argparse reads it), else the terminal's language.
    ``loadmodel`` uses the same rule (``env_language``): the first line and the rest must agree."""
    for i, arg in enumerate(argv):
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
    return env_language()


def wants_host(argv: list[str]) -> bool:
    """``loadmodel NAME`` (not ``--list``, not ``--help``)."""
    rest = argv[2:]
    return len(argv) > 2 and argv[1] == "loadmodel" and not {"--list", "-h", "--help"} & set(rest)


def quit_now(signum: int = 0, frame: Any = None) -> None:
    """Exit 130 at once, host included: nothing is recorded before the job exists. (Runs in a
    signal handler: no lock is taken, the host is killed without waiting for its reader.)"""
    from loader.jobs.local import MODEL_HOST

    if _ticker is not None:
        _ticker.set()
    pid = MODEL_HOST.pid
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    ko, en = CANCELLED_MESSAGE
    os.write(2, f"\n{en if language(sys.argv) == 'en' else ko}\n".encode())
    os._exit(130)


def start(argv: list[str]) -> None:
    if not wants_host(argv):
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, quit_now)
    from loader.jobs.local import MODEL_HOST

    MODEL_HOST.start()
    global _ticker
    _ticker = threading.Event()
    threading.Thread(target=_tick, args=(_ticker, language(argv)), name="cli-ticker", daemon=True).start()


def _tick(stop: threading.Event, lang: str) -> None:
    started = time.monotonic()
    tty = sys.stderr.isatty()
    while True:
        with _lock:
            if stop.is_set():
                return
            text = stage_message(Stage.PREPARING, lang, "host", elapsed=f"{time.monotonic() - started:.1f}")
            sys.stderr.write(f"\r{text}\x1b[K" if tty else text + "\n")
            sys.stderr.flush()
        if stop.wait(TICK_S if tty else 2 * TICK_S):
            return


def stop_ticker() -> None:
    """The command's bars take the line over from here."""
    with _lock:
        if _ticker is not None and not _ticker.is_set():
            _ticker.set()
            if sys.stderr.isatty():
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
