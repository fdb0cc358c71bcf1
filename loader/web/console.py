"""One way to write a line to the server's terminal while progress bars are drawn on it.

The server terminal draws tqdm bars (``terminal.py``) on the same tty where daphne writes its
access log and every logger writes its lines. A line written while a bar is on screen lands in
the bar's row (the bar's carriage return then overdraws half of it, or the line splits the bar
in two). Everything that writes to the terminal goes through ``above_bars``: tqdm clears its
bars, the line is written, the bars are redrawn below it. Without bars it is a plain write.

No Django here: the logging configuration imports this module before the apps are loaded.
"""

from __future__ import annotations

import contextlib
import logging
import sys
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


def route_access_log() -> None:
    """daphne writes its access log straight to stdout (not through logging): route each entry
    above the bars too. A patch point on ``daphne.access.AccessLogGenerator.write_entry``."""
    from daphne.access import AccessLogGenerator

    write_entry = AccessLogGenerator.write_entry
    if getattr(write_entry, "_above_bars", False):
        return

    def write_above(self: Any, *args: Any, **kwargs: Any) -> None:
        with above_bars(self.stream):
            write_entry(self, *args, **kwargs)

    write_above._above_bars = True  # type: ignore[attr-defined]
    AccessLogGenerator.write_entry = write_above
