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

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
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
from loader.pipeline.device import DEVICES, DTYPES
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.names import WARNINGS, terminal_json, terminal_value, visible_name
from loader.web.terminal import LoadBars


def default_lang() -> str:
    """Korean first; an English locale in LANG/LC_ALL switches the messages to English."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var, "")
        if value:
            return "en" if value.lower().startswith("en") else "ko"
    return "ko"


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


def list_line(info: dict[str, Any]) -> str:
    """One ``--list`` row: tab-separated cells, each escaped (a tab or newline in a name stays in its cell)."""
    cells = [info["display_name"], f"{info['size_bytes'] / 1e6:.1f} MB", f"{info['shards']} shard(s)"]
    cells.append(str(info["architecture"]))
    if info["step"] is not None:
        cells.append(f"step {info['step']}")
    if info["name_warning"]:  # the name passes for another one: say so beside it
        cells.append(f"⚠ {here(WARNINGS[info['name_warning']])}")
    if adapter := info["adapter"]:
        cells.append(f"{adapter['type']} r={adapter['rank']} base={adapter['base']}")
    if info["problem"]:
        cells.append(f"⚠ {here(info['problem'])}")
    return "\t".join(terminal_value(cell) for cell in cells)


class Command(BaseCommand):
    help = "Load a checkpoint (a name from --list, or a folder path) with progress bars."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", nargs="?", help="model name from --list, or a checkpoint folder")
        parser.add_argument("--device", default="auto", choices=DEVICES)
        parser.add_argument("--dtype", default="auto", choices=DTYPES)
        parser.add_argument("--json", action="store_true", help="print the final snapshot as JSON on stdout")
        parser.add_argument("--list", action="store_true", help="list the models the dashboard offers")
        parser.add_argument("--merge", action="store_true", help="merge a PEFT adapter into its base model")
        parser.add_argument(
            "--lang", choices=("ko", "en"), default=default_lang(), help="message language (default: from LANG)"
        )

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
            for info in describe_all():
                self.stdout.write(list_line(info))
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
        publisher.flush()  # the final snapshot must reach Redis before this process exits
        state = loader_state(job=job)
        if opts["json"]:
            # JSON escapes C0 controls only: C1 (U+009B CSI), bidi and line separators as \uXXXX too.
            self.stdout.write(terminal_json(json.dumps(state["job"], ensure_ascii=False, indent=2)))
        connection.close()
        if job.state == "succeeded":
            took = f"{job.timings.get('total', 0):.2f}s"
            said = f"{visible_name(name)} ({terminal_value(job.device)}, {terminal_value(job.dtype)}, {took})"
            self.stderr.write(self.style.SUCCESS(f"{gettext('✅ 모델 로드 완료!')} {said}"))
            for note in (job.metadata or {}).get("notes") or []:  # what changed from what was asked, or was left out
                text = in_lang(note.get("template", ""), note.get("params") or {}, opts["lang"])
                self.stderr.write(f"ℹ {terminal_value(text)}")
            return
        if job.state == "cancelled":
            self.stderr.write(gettext("로드가 취소되었습니다."))
            sys.exit(130)
        saved = job.error_params or {}
        error = in_lang(saved.get("template") or job.error_message, saved.get("params") or {}, opts["lang"])
        self.stderr.write(self.style.ERROR(f"{gettext('❌ 오류:')} {terminal_value(error)}"))
        sys.exit(1)
