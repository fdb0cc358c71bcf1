"""The server's terminal shows every load as ``loadmodel`` does (FAQ Q10).

Whoever started the load (a browser, or the CLI seen through the server's watcher), each full
snapshot the server publishes is drawn as the same two tqdm bars the CLI draws: the overall
stage bar with the stage message, and "Loading checkpoint shards" in bytes with shard k/N, rate
and ETA. One INFO line per finished stage (with its duration) and an outcome line are logged
on ``loader.terminal``; ``MACTUNER_TERMINAL_BARS=0`` turns the bars off, the log lines stay.

``show`` runs on the load thread up to ~10 times a second: it is a few attribute updates, and
it never raises into the publisher (a broken terminal must not break a load).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import Any, TextIO

from django.utils.translation import gettext

from loader.jobs.history import CHART_STAGES, STAGE_LABELS
from loader.pipeline.i18n import gettext_noop, printable
from loader.pipeline.names import visible_name

log = logging.getLogger("loader.terminal")

# The stage names of the page's chart; str() says them in the active (server) language.
STAGE_ORDER = CHART_STAGES
STAGE_NAMES = STAGE_LABELS
SHARDS_DESC = "Loading checkpoint shards"
REMEMBERED_JOBS = 64


class LoadBars:
    """The overall stage bar and the bytes bar; shared by ``loadmodel`` and the server terminal."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm

        self.tqdm, self.stream = tqdm, stream
        self.overall = tqdm(
            total=100,
            desc=gettext("준비 중..."),  # the active language: loadmodel's --lang/locale, the server's own
            file=stream,
            bar_format="{desc:<24} {percentage:3.0f}%|{bar}| [{elapsed}]",
        )
        self.weights: Any = None
        self.weights_closed = False

    def update(self, stage: str, percent: float, message: str, detail: dict[str, Any]) -> None:
        self.overall.set_description_str(message, refresh=False)
        self.overall.update(max(percent - self.overall.n, 0))
        total, done = int(detail.get("bytes_total") or 0), int(detail.get("bytes_done") or 0)
        if stage == "weights" and total and self.weights is None:
            self.weights = self.tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1000, file=self.stream, desc=SHARDS_DESC
            )
        if self.weights is not None and not self.weights_closed:
            # Past the weights stage the last snapshot still carries the final byte count:
            # a throttled feed may have skipped the event that reached it.
            self.weights.set_postfix_str(f"shard {detail.get('shard', 0)}/{detail.get('shards', 0)}", refresh=False)
            self.weights.update(max(done - self.weights.n, 0))
            if stage != "weights":
                self.weights.close()
                self.weights_closed = True

    def write_above(self) -> contextlib.AbstractContextManager[Any]:
        """Clear the bars while a log line is written, then redraw them."""
        return self.tqdm.external_write_mode(file=self.stream)

    def close(self) -> None:
        if self.weights is not None and not self.weights_closed:
            self.weights.close()
        self.overall.close()


def bars_enabled() -> bool:
    return os.environ.get("MACTUNER_TERMINAL_BARS", "1").strip().lower() not in ("0", "false", "no", "off")


class TerminalBars:
    """Turns the stream of full snapshots into bars and log lines, one job at a time."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self._stream = stream
        self._enabled = enabled
        self._lock = threading.Lock()
        self._job: Any = None
        self._bars: LoadBars | None = None
        self._logged: set[str] = set()
        self._finished: list[Any] = []

    def show(self, state: dict[str, Any]) -> None:
        try:
            with self._lock:
                self._show(state)
        except Exception:
            log.exception("terminal progress failed; the load goes on")
            self.close()  # do not retry a broken stream on every snapshot

    def close(self) -> None:
        """Drop the bars of a job whose end never came (the process exits mid-load)."""
        with contextlib.suppress(Exception):
            self._close_bars()

    def _show(self, state: dict[str, Any]) -> None:
        job = state.get("job")
        if not job or job.get("id") in self._finished:
            return
        job = _printable_job(job)
        owner = job.get("owner") or {}
        if job.get("source") == "cli" and owner.get("pid") == os.getpid():
            return  # this process is `loadmodel`: it draws its own bars from the events
        if job["id"] != self._job:
            if not job.get("active"):
                return  # a job that ended before we saw it run (a snapshot after unload)
            self._begin(job)
        self._log_stages(job)
        if self._bars is not None:
            self._bars.update(
                job.get("stage", ""), float(job.get("percent") or 0), job.get("message") or "", job.get("detail") or {}
            )
        if not job.get("active"):
            self._end(job)

    def _begin(self, job: dict[str, Any]) -> None:
        self._close_bars()
        self._job, self._logged = job["id"], set()
        self._info(
            gettext_noop('로드 시작 #%s: %s (%s, device=%s, dtype=%s)'),
            job["id"], job.get("model"), job.get("source"), job.get("device_requested"), job.get("dtype_requested"),
        )  # fmt: skip
        enabled = bars_enabled() if self._enabled is None else self._enabled
        if enabled:
            self._bars = LoadBars(self._stream or sys.stderr)

    def _log_stages(self, job: dict[str, Any]) -> None:
        timings = job.get("timings") or {}
        for stage in STAGE_ORDER:
            if stage in timings and stage not in self._logged:
                self._logged.add(stage)
                self._info("#%s %s (%s): %.2fs", job["id"], STAGE_NAMES[stage], stage, float(timings[stage]))

    def _end(self, job: dict[str, Any]) -> None:
        self._close_bars()
        self._job = None
        self._finished = [*self._finished[-REMEMBERED_JOBS:], job["id"]]
        state, total = job.get("state"), (job.get("timings") or {}).get("total")
        if state == "succeeded":
            took = f", {float(total):.2f}s" if total is not None else ""
            log.info(
                gettext_noop("✅ 모델 로드 완료! #%s %s (%s, %s%s)"),
                job["id"],
                job.get("model"),
                job.get("device"),
                job.get("dtype"),
                took,
            )
        elif state == "cancelled":
            log.info(gettext_noop("로드가 취소되었습니다. #%s %s"), job["id"], job.get("model"))
        else:
            error = job.get("error") or {}
            log.warning(gettext_noop("❌ 오류: #%s %s: %s"), job["id"], job.get("model"), error.get("message") or state)

    def _info(self, fmt: str, *args: Any) -> None:
        if self._bars is None:
            log.info(fmt, *args)
            return
        with self._bars.write_above():
            log.info(fmt, *args)

    def _close_bars(self) -> None:
        bars, self._bars = self._bars, None
        if bars is not None:
            bars.close()


terminal = TerminalBars()
atexit.register(terminal.close)  # before tqdm's own teardown, or its __del__ fails at exit


def _printable_job(job: dict[str, Any]) -> dict[str, Any]:
    """Folder names and messages come from a checkpoint: no escape sequences reach the terminal, and
    a name shows its invisible and look-alike characters as ``loadmodel`` and the page do."""
    model, message = visible_name(str(job.get("model") or "")), printable(str(job.get("message") or ""))
    job = dict(job, model=model, message=message)
    if job.get("error"):
        job["error"] = dict(job["error"], message=printable(str(job["error"].get("message") or "")))
    return job
