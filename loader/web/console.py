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
    count as one terminal, as tqdm counts them)."""
    # No tqdm imported (or still importing, on another thread): no bar can be on screen.
    bar_class = getattr(sys.modules.get("tqdm"), "tqdm", None)
    if bar_class is None:
        yield
        return
    with bar_class.external_write_mode(file=stream):
        yield


class BarSafeHandler(logging.StreamHandler):
    """The process's one console handler: each record is written above the bars, not into them."""

    def emit(self, record: logging.LogRecord) -> None:
        with above_bars(self.stream):
            super().emit(record)


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
