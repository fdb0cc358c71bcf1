"""The server's terminal shows every load as ``loadmodel`` does (FAQ Q10).

Whoever started the load (a browser, or the CLI seen through the server's watcher, which runs
for as long as the server does), each full snapshot the server publishes is drawn as the same
two tqdm bars the CLI draws: the overall bar ("[4/6] 가중치 · 전체", the stage out of six and the
whole load's percent) and "Loading checkpoint shards" in bytes with shard k/N, rate and ETA. One
INFO line per finished stage (with its duration) and an outcome line are logged on
``loader.terminal``; ``MACTUNER_TERMINAL_BARS=0`` turns the bars off, the log lines stay.

The terminal has one language, its own (``LANG``, as ``loadmodel`` reads it; Korean first), not
the requester's: an English browser's load does not switch the bars to English under Korean log
lines. Every line reaches the tty above the bars (``console.py``), daphne's access log included.

``show`` runs on the publisher's observer thread up to ~10 times a second: a few attribute
updates, and it never raises into the publisher (a broken terminal must not break a load).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import sys
import threading
import time
from typing import Any, TextIO

from django.utils import translation
from django.utils.translation import gettext

from loader.jobs.history import CHART_STAGES, STAGE_LABELS
from loader.jobs.i18n import in_lang
from loader.pipeline.events import Stage, stage_message
from loader.pipeline.i18n import env_language, gettext_noop, printable
from loader.pipeline.names import visible_name
from loader.web.console import QuietStream

log = logging.getLogger("loader.terminal")

# The stage names of the page's chart; str() says them in the active (server) language.
STAGE_ORDER = CHART_STAGES
STAGE_NAMES = STAGE_LABELS
SHARDS_DESC = "Loading checkpoint shards"  # transformers' own words: what users know from its bar
REDRAW_S = 0.1
BYTES_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
REMEMBERED_JOBS = 64


def overall_label(stage: str, message: str) -> str:
    """The overall bar's label: the stage out of six, so it never reads like the bytes bar below
    it ("Loading checkpoint shards..." at 66 % over "Loading checkpoint shards" at 63 % looked
    like one thing measured twice). In the weights stage it names the stage and says "overall"."""
    if stage not in STAGE_ORDER:
        return message  # done, failed, cancelled: the outcome itself
    step = f"[{STAGE_ORDER.index(stage) + 1}/{len(STAGE_ORDER)}]"
    if stage == "weights":
        return f"{step} {STAGE_NAMES[stage]} · {gettext('전체')}"
    return f"{step} {message}"


class LoadBars:
    """The overall bar and the bytes bar; shared by ``loadmodel`` and the server terminal.

    Both are set from each snapshot and redrawn together here (at most ``REDRAW_S`` apart), never
    through tqdm's ``update``: its own pacing ("dynamic miniters") let the overall bar, fed small
    percent steps, lag the bytes bar by seconds, and the rate shown is the loader's, not tqdm's.
    Labels are said in the active language (the caller's ``translation.override``).
    """

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm

        self.tqdm, self.stream = tqdm, QuietStream(stream)
        self.overall = tqdm(
            total=100,
            desc=gettext("준비 중..."),
            file=self.stream,
            bar_format="{desc:<24} {percentage:3.0f}%|{bar}| [{elapsed}]",
        )
        self.weights: Any = None
        self.weights_closed = False
        self.drawn_at = 0.0
        self.drawn_stage = ""

    def update(self, stage: str, percent: float, message: str, detail: dict[str, Any]) -> None:
        self.overall.set_description_str(overall_label(stage, message), refresh=False)
        self.overall.n = min(max(percent, self.overall.n), 100.0)
        total, done = int(detail.get("bytes_total") or 0), int(detail.get("bytes_done") or 0)
        if stage == "weights" and total and self.weights is None:
            self.weights = self.tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1000, file=self.stream, desc=SHARDS_DESC,
                bar_format=BYTES_FORMAT,
            )  # fmt: skip
        weights = self.weights if self.weights is not None and not self.weights_closed else None
        if weights is not None:
            # Past the weights stage the last snapshot still carries the final byte count:
            # a throttled feed may have skipped the event that reached it.
            weights.set_postfix_str(self._bytes_postfix(detail), refresh=False)
            weights.n = min(max(done, weights.n), total or weights.total)
        now = time.monotonic()
        if now - self.drawn_at >= REDRAW_S or stage != self.drawn_stage:
            self.drawn_at, self.drawn_stage = now, stage
            self.overall.refresh()
            if weights is not None:
                weights.refresh()
        if weights is not None and stage != "weights":
            weights.close()
            self.weights_closed = True

    def _bytes_postfix(self, detail: dict[str, Any]) -> str:
        """The loader's own rate and ETA, as the page shows them (settled, never above a read cap),
        not tqdm's: it counts the bytes read ahead during the imports as read at once."""
        parts = []
        if rate := float(detail.get("bytes_per_s") or 0):
            parts.append(self.tqdm.format_sizeof(rate, "B/s", divisor=1000))
        if (eta := detail.get("eta_s")) is not None:
            parts.append(gettext("{time} 남음").format(time=self.tqdm.format_interval(math.ceil(float(eta)))))
        parts.append(f"shard {detail.get('shard', 0)}/{detail.get('shards', 0)}")
        return ", ".join(parts)

    def close(self) -> None:
        if self.weights is not None and not self.weights_closed:
            self.weights.close()
        self.overall.refresh()
        self.overall.close()


def bars_enabled() -> bool:
    return os.environ.get("MACTUNER_TERMINAL_BARS", "1").strip().lower() not in ("0", "false", "no", "off")


class TerminalBars:
    """Turns the stream of full snapshots into bars and log lines, one job at a time."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None, lang: str | None = None) -> None:
        self._stream = stream
        self._enabled = enabled
        self.lang = lang or env_language()  # the terminal's own, fixed for the process
        self._lock = threading.Lock()
        self._job: Any = None
        self._bars: LoadBars | None = None
        self._logged: set[str] = set()
        self._finished: list[Any] = []

    def show(self, state: dict[str, Any]) -> None:
        try:
            with self._lock, translation.override(self.lang):
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
        owner = job.get("owner") or {}
        if job.get("source") == "cli" and owner.get("pid") == os.getpid():
            return  # this process is `loadmodel`: it draws its own bars from the events
        if job["id"] != self._job:
            if not job.get("active"):
                return  # a job that ended before we saw it run (a snapshot after unload)
            self._begin(job)
        self._log_stages(job)
        if self._bars is not None:
            stage = job.get("stage") or ""
            self._bars.update(stage, float(job.get("percent") or 0), self._message(job), job.get("detail") or {})
        if not job.get("active"):
            self._end(job)

    def _message(self, job: dict[str, Any]) -> str:
        """The job's message in the terminal's language: the snapshot's own when the requester
        spoke it, else said again from the stage (or the outcome)."""
        error, state = job.get("error") or {}, job.get("state")
        if error.get("text"):
            text = error["text"].get(self.lang) or error.get("message") or ""
            return printable(in_lang(gettext_noop("❌ 오류: {message}"), {"message": text}, self.lang))
        if job.get("lang") == self.lang or not job.get("lang"):
            return printable(str(job.get("message") or ""))
        if said := (job.get("message_text") or {}).get(self.lang):  # the job's own words, reworded
            return printable(str(said))
        if state == "cancelled":
            return gettext("로드가 취소되었습니다.")
        try:
            return stage_message(Stage(str(job.get("stage"))), self.lang, device=job.get("device") or "")
        except ValueError:  # a stage this release does not know: the requester's words beat none
            return printable(str(job.get("message") or ""))

    def _begin(self, job: dict[str, Any]) -> None:
        self._close_bars()
        self._job, self._logged = job["id"], set()
        self._info(
            gettext_noop('로드 시작 #%s: %s (%s, device=%s, dtype=%s)'),
            job["id"], _name(job), job.get("source"), job.get("device_requested"), job.get("dtype_requested"),
        )  # fmt: skip
        enabled = bars_enabled() if self._enabled is None else self._enabled
        if enabled:
            self._bars = LoadBars(self._stream or sys.stderr)

    def _log_stages(self, job: dict[str, Any]) -> None:
        timings = job.get("timings") or {}
        for stage in STAGE_ORDER:
            if stage in timings and stage not in self._logged:
                self._logged.add(stage)
                self._info("#%s %s (%s): %.2fs", job["id"], str(STAGE_NAMES[stage]), stage, float(timings[stage]))

    def _end(self, job: dict[str, Any]) -> None:
        self._close_bars()
        self._job = None
        self._finished = [*self._finished[-REMEMBERED_JOBS:], job["id"]]
        # The click (or Enter) to ready, as the page says it; the stages' total only when unknown.
        state, total = job.get("state"), job.get("wall_s") or (job.get("timings") or {}).get("total")
        if state == "succeeded":
            took = f", {float(total):.2f}s" if total is not None else ""
            self._info(
                gettext_noop("✅ 모델 로드 완료! #%s %s (%s, %s%s)"),
                job["id"], _name(job), job.get("device"), job.get("dtype"), took,
            )  # fmt: skip
        elif state == "cancelled":
            self._info(gettext_noop("로드가 취소되었습니다. #%s %s"), job["id"], _name(job))
        else:
            error = job.get("error") or {}
            text = (error.get("text") or {}).get(self.lang) or error.get("message") or state
            self._info(gettext_noop("❌ 오류: #%s %s: %s"), job["id"], _name(job), printable(str(text)), warn=True)

    def _info(self, fmt: str, *args: Any, warn: bool = False) -> None:
        """A log line in the terminal's language (the caller is inside its ``override``), written
        above the bars by the console handler."""
        log.log(logging.WARNING if warn else logging.INFO, gettext(fmt), *args)

    def _close_bars(self) -> None:
        bars, self._bars = self._bars, None
        if bars is not None:
            bars.close()


terminal = TerminalBars()
atexit.register(terminal.close)  # before tqdm's own teardown, or its __del__ fails at exit


def _name(job: dict[str, Any]) -> str:
    """A folder's name comes from the disk: no escape sequence reaches the terminal, and its
    invisible and look-alike characters show as ``loadmodel`` and the page show them."""
    return visible_name(str(job.get("model") or ""))
