"""One way to write a line to the server's terminal while progress bars are drawn on it.

The server terminal draws tqdm bars (``terminal.py``) on the same tty where daphne writes its
access log and every logger writes its lines. A line written while a bar is on screen lands in
the bar's row (the bar's carriage return then overdraws half of it, or the line splits the bar
in two). Everything that writes to the terminal goes through ``above_bars``: tqdm clears its
bars, the line is written, the bars are redrawn below it. Without bars it is a plain write.

No Django here: the logging configuration imports this module before the apps are loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def above_bars(stream: IO[Any]) -> Iterator[None]:
    """Clear the bars drawn on ``stream``'s terminal while the caller writes (stdout and stderr
    count as one terminal, as tqdm counts them). Clearing and redrawing never raise: a terminal
    that cannot be written (a full disk under a redirected log, a closed tty) must not turn a log
    call into an exception in the load thread that made it."""
    # No tqdm imported (or still importing, on another thread): no bar can be on screen.
    bar_class = getattr(sys.modules.get("tqdm"), "tqdm", None)
    mode: Any = None
    if bar_class is not None:
        try:
            mode = bar_class.external_write_mode(file=stream)
            mode.__enter__()
        except Exception:  # the clearing failed (tqdm released its lock): write anyway
            mode = None
    try:
        yield
    finally:
        if mode is not None:
            with contextlib.suppress(Exception):
                mode.__exit__(None, None, None)  # redraw the bars, release tqdm's lock


class QuietStream:
    """The stream tqdm draws on, made unable to raise. tqdm's ``refresh`` releases its global lock
    only when the write returns: a bar drawn on a full disk (a redirected server log) or a closed
    tty raised and left the lock held, and every thread that logged next waited for it forever
    (the load thread included). A bar that cannot be drawn is simply not drawn."""

    def __init__(self, stream: IO[Any]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # ENOSPC, EIO, EPIPE; ValueError: a closed file
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)  # fileno, isatty, encoding: what tqdm asks for its width

    def __eq__(self, other: object) -> bool:
        # tqdm clears the bars of the terminal a line goes to by comparing streams.
        return self._stream == getattr(other, "_stream", other)

    def __hash__(self) -> int:
        return hash(self._stream)


class BarSafeHandler(logging.StreamHandler):
    """The process's one console handler: each record is written above the bars, not into them,
    and, like every logging handler, it never raises into the code that logs."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with above_bars(self.stream):
                super().emit(record)
        except Exception:
            self.handleError(record)


class _Writer:
    """The one thread that writes the server's terminal output, in the order it was written.

    A server started as ``daphne … | tee log`` (or by a supervisor whose reader stalled) has a pipe
    for its terminal: once nobody reads it, a write waits forever, and the write came from daphne's
    own loop (the access log) or a load's thread. Here every write is queued and returns at once;
    this thread does the waiting. Past ``limit`` characters unwritten, writes are dropped: the
    terminal misses lines, the server serves. One queue for stdout and stderr keeps a line
    written above the bars between their clearing and their redraw."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size, self.dropped = limit, 0, 0
        self.parts: deque[tuple[IO[Any], str]] = deque()
        self.busy = False
        self.cond = threading.Condition()
        threading.Thread(target=self._run, name="console-writer", daemon=True).start()

    def put(self, stream: IO[Any], text: str) -> None:
        with self.cond:
            if self.size + len(text) > self.limit:
                self.dropped += 1
                return
            self.parts.append((stream, text))
            self.size += len(text)
            self.cond.notify()

    def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for what is queued to be written: at exit, the last lines."""
        with self.cond:
            self.cond.wait_for(lambda: not self.parts and not self.busy, timeout)

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: bool(self.parts))
                parts, self.busy = list(self.parts), True
                self.parts.clear()
                self.size = 0
            for stream, text in parts:
                with contextlib.suppress(OSError, ValueError):
                    stream.write(text)
                    stream.flush()
            with self.cond:
                self.busy = False
                self.cond.notify_all()


class BackgroundStream:
    """``stream`` whose ``write`` never waits: the text goes to the console writer's queue."""

    def __init__(self, stream: IO[Any], writer: _Writer) -> None:
        # Not ``_stream``: tqdm and ``QuietStream`` unwrap that name to match a line's terminal to the bars'.
        self._real, self._writer = stream, writer

    def write(self, text: str) -> int:
        self._writer.put(self._real, text)
        return len(text)

    def flush(self) -> None:
        pass  # the writer flushes each write; waiting here is what this stream is for

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)  # fileno, isatty, encoding


_background: dict[int, BackgroundStream] = {}  # id(the real stream) → its stand-in


def in_background(stream: Any) -> Any:
    """The stand-in of ``stream`` once ``write_in_background`` ran (else ``stream`` itself)."""
    return _background.get(id(stream), stream)


def write_in_background(limit: int = 4 * 1024 * 1024) -> None:
    """The server's stdout and stderr (and every logging handler on them) write through one
    background writer: a terminal pipe that nobody reads never stops the server or a load."""
    if _background:
        return
    writer = _Writer(limit)
    for name in ("stdout", "stderr"):
        real = getattr(sys, name)
        if real is None:
            continue  # started with the stream closed: nothing is written there
        _background[id(real)] = stand_in = BackgroundStream(real, writer)
        setattr(sys, name, stand_in)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and id(handler.stream) in _background:
            handler.setStream(in_background(handler.stream))
    atexit.register(writer.drain, 2.0)


def route_access_log() -> None:
    """daphne writes its access log straight to stdout (not through logging): route each entry
    above the bars too. A patch point on ``daphne.access.AccessLogGenerator.write_entry``."""
    from daphne.access import AccessLogGenerator

    write_entry = AccessLogGenerator.write_entry
    if getattr(write_entry, "_above_bars", False):
        return

    def write_above(self: Any, *args: Any, **kwargs: Any) -> None:
        self.stream = in_background(self.stream)  # daphne took sys.stdout before the server started
        with above_bars(self.stream):
            write_entry(self, *args, **kwargs)

    write_above._above_bars = True  # type: ignore[attr-defined]
    AccessLogGenerator.write_entry = write_above
