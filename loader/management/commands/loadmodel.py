"""Load a model from the terminal with tqdm bars, recorded as a LoadJob like a web load.

The model loads in a model host of this command's own (spawned by ``manage.py`` before Django's
set-up, see ``loader.management.launch``), driven exactly as a server drives its host. Ctrl-C or
SIGTERM: before the job exists, exit at once; after, the job is cancelled (the host gets
``CANCEL_GRACE_S`` to stop, then it is killed) and recorded. Either way: exit 130, no host left.

Exit codes: 0 loaded, 1 failed, 2 refused (busy or bad arguments), 130 cancelled (Ctrl-C/SIGTERM).

What a folder says (its name, its config's values, messages quoting them) is escaped on every
line written here, as the server's terminal does: a name holding ``ESC]0;…BEL`` or a newline must
not retitle the window, clear the screen or fake an output line (``loader.pipeline.names``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, DjangoHelpFormatter
from django.db import connection
from django.utils import translation
from django.utils.translation import gettext

from loader.catalog.listing import describe_all, find_model
from loader.jobs import services
from loader.jobs.i18n import here, in_lang
from loader.jobs.local import IDENTITY, MODEL_HOST
from loader.jobs.publisher import publisher
from loader.jobs.runner import execute_job
from loader.jobs.selectors import job_active, loader_state
from loader.management import launch
from loader.management.trying import process_started_at, try_model
from loader.pipeline.device import DEVICES, DTYPES
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.names import WARNINGS, terminal_json, terminal_value, visible_name
from loader.web.terminal import LoadBars


def default_lang() -> str:
    """Korean first; an English locale in LC_ALL/LC_MESSAGES/LANG switches the messages to English.
    The rule lives in ``launch`` (which draws the first line before Django is set up): one owner."""
    return launch.env_language()


CLI_CANCEL_GRACE_S = 0.2  # the terminal's model dies with the command: exit within a second


class Bars:
    """The overall bar with the stage message and the bytes bar, on stderr (shared with the server)."""

    def __init__(self, stream: Any) -> None:
        self.bars = LoadBars(stream)

    def __call__(self, event: dict[str, Any]) -> None:
        message = terminal_value(event["message"])  # a stage message may quote the folder's name
        self.bars.update(str(event["stage"]), float(event["percent"]), message, event["detail"])

    def close(self) -> None:
        self.bars.close()


UNKNOWN = "—"  # a value the checkpoint does not say (no architecture in its config): never "None"
EXIT_CODES = """exit codes:
  0    loaded
  1    the load failed (the error is printed; the job is recorded as failed)
  2    refused before loading: another load is running, the model is unknown, or bad arguments
  130  cancelled (Ctrl-C or SIGTERM); the job, if it had started, is recorded as cancelled"""


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option order, with the exit-code table kept as written (not refilled into one line)."""


def list_line(info: dict[str, Any]) -> str:
    """One ``--list`` row for a pipe or a file: tab-separated cells, each escaped (a tab or newline
    in a name stays in its cell), for ``cut -f1`` and other scripts."""
    cells = [info["display_name"], f"{info['size_bytes'] / 1e6:.1f} MB", f"{info['shards']} shard(s)"]
    cells.append(str(info["architecture"] or UNKNOWN))
    if info["step"] is not None:
        cells.append(f"step {info['step']}")
    if info["name_warning"]:  # the name passes for another one: say so beside it
        cells.append(f"⚠ {here(WARNINGS[info['name_warning']])}")
    if adapter := info["adapter"]:
        cells.append(f"{adapter['type']} r={adapter['rank']} base={adapter['base']}")
    if info["problem"]:
        cells.append(f"⚠ {here(info['problem'])}")
    return "\t".join(terminal_value(cell) for cell in cells)


def cell_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide and fullwidth characters (Hangul, CJK)
    take two, combining marks none; ``len`` would misalign every row holding a Korean name."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text
    )


def wrap_columns(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` columns, broken between words only (a word longer
    than the line keeps its own line whole: a path cut in two cannot be copied)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and cell_width(line) + 1 + cell_width(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def list_table(infos: list[dict[str, Any]], width: int) -> list[str]:
    """``--list`` for a person at a terminal ``width`` columns wide: a header, aligned columns
    (measured in terminal columns), "—" where a value is unknown, and each row's warnings and
    problem below it, wrapped between words and indented under the row."""
    titles = (
        gettext("이름"),
        gettext("크기"),
        gettext("샤드 수"),
        gettext("아키텍처"),
        gettext("스텝"),
        gettext("어댑터"),
    )
    header = [text.upper() for text in titles]
    right = {1, 2}  # numbers line up on their last digit
    rows: list[list[str]] = []
    notes: list[list[str]] = []
    for info in infos:
        adapter = info["adapter"]
        cells = [
            info["display_name"],
            f"{info['size_bytes'] / 1e6:.1f} MB",
            str(info["shards"]),
            info["architecture"] or UNKNOWN,
            UNKNOWN if info["step"] is None else str(info["step"]),
            f"{adapter['type']} r={adapter['rank']} base={adapter['base']}" if adapter else UNKNOWN,
        ]
        rows.append([terminal_value(cell) for cell in cells])
        warning = [here(WARNINGS[info["name_warning"]])] if info["name_warning"] else []
        problem = [here(info["problem"])] if info["problem"] else []
        notes.append([terminal_value(note) for note in [*warning, *problem]])
    widths = [max(cell_width(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = []
        for i, cell in enumerate(cells):
            gap = " " * (widths[i] - cell_width(cell))
            padded.append(gap + cell if i in right else cell + gap)
        return "  ".join(padded).rstrip()

    out = [line(header)]
    indent, mark = "    ", "⚠ "
    for cells, below in zip(rows, notes, strict=True):
        out.append(line(cells))
        for note in below:
            wrapped = wrap_columns(note, max(20, width - len(indent) - len(mark)))
            out += [indent + (mark if i == 0 else " " * len(mark)) + part for i, part in enumerate(wrapped)]
    return out


def _tokens(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("1-256")
    return value


def _try_line(tried: dict[str, Any]) -> str:
    """tokens, decode rate and the first token's time from Enter, in the CLI's language."""
    if tried.get("state") != "done" and tried.get("error"):
        return (
            f"{gettext('❌ 오류:')} {terminal_value(str(tried['error'].get('reason') or tried['error'].get('code')))}"
        )
    rate = tried.get("tokens_per_s")
    return gettext("{tokens}개 토큰 · {rate} 토큰/초 · 첫 토큰: Enter부터 {enter}초, 생성 요청부터 {first}초").format(
        tokens=tried.get("tokens", 0), rate=f"{rate:.1f}" if isinstance(rate, int | float) else "—",
        enter=_secs(tried.get("after_enter_s")), first=_secs(tried.get("first_token_s")),
    )  # fmt: skip


def _secs(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "—"


class Command(BaseCommand):
    help = (
        "Load a checkpoint (a name from --list, or a folder path) in this command's own model host, "
        "with progress bars on stderr, recorded in the job history like a load from the web page."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("epilog", EXIT_CODES)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = _HelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", nargs="?", help="model name from --list, or a checkpoint folder")
        parser.add_argument(
            "--device", default="auto", choices=DEVICES,
            help="where the model is loaded: auto picks MPS, then CUDA, then the CPU (default: auto)",
        )  # fmt: skip
        parser.add_argument(
            "--dtype", default="auto", choices=DTYPES,
            help="the weights' dtype in memory: auto keeps the checkpoint's (config.json), changed only "
            "where the device cannot hold it (and then said) (default: auto)",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="print the final snapshot as JSON on stdout")
        parser.add_argument(
            "--list", action="store_true",
            help="list the models the dashboard offers: aligned columns on a terminal, tab-separated into a pipe",
        )  # fmt: skip
        parser.add_argument("--merge", action="store_true", help="merge a PEFT adapter into its base model")
        parser.add_argument(
            "--try", dest="try_prompt", metavar="PROMPT",
            help="after the load, generate an answer to PROMPT (greedy), streamed, then tokens/s and the time "
            "from Enter to the first token; --json includes it",
        )  # fmt: skip
        parser.add_argument(
            "--max-new-tokens", type=_tokens, default=32, help="with --try: tokens to generate, 1-256 (default: 32)"
        )
        parser.add_argument("--chat", action="store_true", help="with --try: use the tokenizer's chat template")
        parser.add_argument(
            "--lang",
            choices=("ko", "en"),
            default=default_lang(),
            help="message language (default: from LC_ALL, LC_MESSAGES or LANG: English locales English, else Korean)",
        )

    def _json(self, value: dict[str, Any]) -> None:
        # JSON escapes C0 controls only: C1 (U+009B CSI), bidi and line separators as \uXXXX too.
        self.stdout.write(terminal_json(json.dumps(value, ensure_ascii=False, indent=2)))

    def handle(self, *args: Any, **opts: Any) -> None:
        serving, IDENTITY.serving = IDENTITY.serving, False  # our model dies with us: never advertise it
        cancel = threading.Event()
        # "" before the job, "creating" while its row is written, "started" after: a signal while
        # the row is written is kept and cancels the job once it exists (never a row left queued;
        # blocking the signal would not do: another thread of ours may receive it).
        started: list[str] = [""]

        def on_signal(signum: int, frame: Any) -> None:
            if started[0] == "":  # no job yet: nothing to record, leave at once (the host with us)
                launch.quit_now()
            cancel.set()  # our own job: the signal is the cancel, no need to go through the row

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with translation.override(opts["lang"]):  # messages in the terminal's language
                self._handle(opts, cancel, started)
        except CommandError as refused:
            launch.stop_ticker()
            if opts["json"]:  # scripts read stdout: a refusal is JSON there too
                refusal = {"error": str(refused), "exit": refused.returncode}
                self.stdout.write(terminal_json(json.dumps(refusal, ensure_ascii=False)))
            raise
        finally:
            launch.stop_ticker()
            MODEL_HOST.stop()  # the terminal's model dies with the command
            IDENTITY.serving = serving
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, opts: dict[str, Any], cancel: threading.Event, started: list[str]) -> None:
        if opts["list"]:
            infos = describe_all()
            if self.stdout.isatty():  # a person reads it: a table; a script reads tab-separated rows
                lines = list_table(infos, shutil.get_terminal_size().columns)
            else:
                lines = [list_line(info) for info in infos]
            for text in lines:
                self.stdout.write(text)
            return
        if not opts["model"]:
            raise CommandError(gettext("모델 이름이나 폴더 경로를 지정하세요 (목록: loadmodel --list)."), returncode=2)
        entry = find_model(opts["model"])
        path = entry.path if entry else Path(opts["model"]).expanduser().resolve()
        name = entry.name if entry else path.name
        if entry is None and not path.exists():
            shown = visible_name(opts["model"])
            message = gettext_noop("모델을 찾을 수 없습니다: {name} (목록: loadmodel --list)", name=shown)
            raise CommandError(here(message), returncode=2)
        services.job_reap()
        if (active := job_active()) is not None:  # refuse at once, before the slow imports
            raise CommandError(here(services.JobBusy(active).message), returncode=2)
        MODEL_HOST.start()  # (manage.py has spawned it already: it imports while we get here)
        started[0] = "creating"
        try:
            job = services.job_start(
                model_name=name, model_path=str(path), device=opts["device"], dtype=opts["dtype"], source="cli",
                lang=opts["lang"], merge=opts["merge"],
            )  # fmt: skip
            started[0] = "started"  # from here a signal cancels the job, it no longer exits
        except services.JobBusy as busy:
            started[0] = ""
            if cancel.is_set():
                launch.quit_now()
            raise CommandError(here(busy.message), returncode=2) from None
        except BaseException:
            started[0] = ""
            raise
        launch.stop_ticker()
        bars = Bars(sys.stderr)
        try:
            job = execute_job(job, cancel, listener=bars, grace_s=CLI_CANCEL_GRACE_S)
        finally:
            bars.close()
        # What the user waited: Enter (the process's start) to ready; the stages' split is in ``timings``.
        command_s = round(time.time() - process_started_at(), 3)
        publisher.flush()  # the final snapshot must reach Redis before this process exits
        state = loader_state(job=job)
        if opts["json"] and not (job.state == "succeeded" and opts["try_prompt"]):
            self._json(state["job"] | {"command_s": command_s})
        connection.close()
        if job.state == "succeeded":
            took = f"{command_s:.2f}s"
            said = f"{visible_name(name)} ({terminal_value(job.device)}, {terminal_value(job.dtype)}, {took})"
            self.stderr.write(self.style.SUCCESS(f"{gettext('✅ 모델 로드 완료!')} {said}"))
            for note in (job.metadata or {}).get("notes") or []:  # what changed from what was asked, or was left out
                text = in_lang(note.get("template", ""), note.get("params") or {}, opts["lang"])
                self.stderr.write(f"ℹ {terminal_value(text)}")
            if opts["try_prompt"]:
                out = sys.stderr if opts["json"] else sys.stdout
                tried = try_model(
                    job, opts["try_prompt"], max_new_tokens=opts["max_new_tokens"], chat=opts["chat"], cancel=cancel,
                    out=out, grace_s=CLI_CANCEL_GRACE_S,
                )  # fmt: skip
                self.stderr.write(_try_line(tried))
                if opts["json"]:
                    self._json(state["job"] | {"try": tried, "command_s": round(time.time() - process_started_at(), 3)})
                if tried["state"] == "cancelled":
                    sys.exit(130)
                if tried["state"] != "done":
                    sys.exit(1)
            return
        if job.state == "cancelled":
            self.stderr.write(gettext("로드가 취소되었습니다."))
            saved = job.error_params or {}  # what else the cancel cost (the model this load had unloaded)
            if saved.get("template"):
                said = in_lang(saved["template"], saved.get("params") or {}, opts["lang"])
                self.stderr.write(f"ℹ {terminal_value(said)}")
            sys.exit(130)
        saved = job.error_params or {}
        error = in_lang(saved.get("template") or job.error_message, saved.get("params") or {}, opts["lang"])
        self.stderr.write(self.style.ERROR(f"{gettext('❌ 오류:')} {terminal_value(error)}"))
        sys.exit(1)
