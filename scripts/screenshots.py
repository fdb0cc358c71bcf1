"""Screenshots of every state of the loader page, in both languages and at both sizes (#20 "Measure").

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Why a script and not a folder of hand-made pictures: the README shows what the page looks like, and
pictures taken by hand drift from the code the day after. This one starts from nothing each time
(a throwaway SQLite file and models folder with generated checkpoints, a real daphne server on a
free port, read-capped so a load can be photographed mid-weights), drives Debian's Chromium through
each state as a user would (clicks, not API calls), and writes ``<state>-<lang>-<size>.png``.

Every state is waited for as a DOM condition, never a sleep; a state that is not reached stops the
run with exit 1 and says which (with the server log's tail). Each picture is also checked for what a
reader would call a bug: a phone page wider than the screen, Korean in the English pages. Those are
reported after all pictures are written (exit 2), so the pictures show them.

Needs Chromium and a Korean font (Debian: ``apt-get install chromium fonts-nanum fonts-noto-color-emoji``):
without one, every Hangul letter is an empty box and the Korean pictures would lie.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: the repository's packages are importable without an install
    sys.path.insert(0, str(ROOT))

from mactuner_dev.harness import LiveServer, migrate, server_env  # noqa: E402

# The states the README's table shows, in the order one run passes through them.
STATES = ("idle", "loading", "cancelled", "failed", "succeeded", "adapter", "history", "admin", "admin-job")
LANGS = {"ko": "ko-KR", "en": "en-US"}  # the browser's language picks the page's (Accept-Language)
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars"]  # fmt: skip
READ_LIMIT_MBPS = "15"  # the 120 MB model reads for ~8 s: long enough to photograph the bar four times
TIMEOUT_MS = 60_000
USER, PASSWORD = "admin", "screenshots-only"  # lives in the throwaway database only
HANGUL = re.compile(r"[\uac00-\ud7a3]")
ACCESS_LINE = re.compile(r"^\d+\.\d+\.\d+\.\d+:\d+ - - \[")  # daphne's one line per request

BIG, BASE = "demo-llama-60m", "demo-llama-8m"
ADAPTER, BROKEN = "demo-llama-8m-lora", "demo-llama-8m-truncated"


class StateNotReached(RuntimeError):
    """A state the page never showed: the run stops and says which one, in which view."""


@dataclass
class View:
    """One browser tab: a language at a size. Every state is photographed in all four."""

    lang: str
    size: str
    page: Any

    @property
    def name(self) -> str:
        return f"{self.lang}-{self.size}"


def write_models(root: Path) -> None:
    """The checkpoints the states need, generated offline: a big one (loading, cancel, success), a
    small base with a LoRA adapter on it, and a copy of the small one with a truncated shard (the
    error the preflight names, as in tests/test_browser.py)."""
    from transformers.utils import logging as hf_logging

    from mactuner_dev import layouts
    from mactuner_dev.synth import write_checkpoint

    hf_logging.disable_progress_bar()  # the adapter's base is read with from_pretrained: no bar in this output
    write_checkpoint(root / BIG, params=60_000_000, shards=4, seed=1)
    write_checkpoint(root / BASE, params=8_000_000, shards=2, seed=2)
    layouts.write_lora(root / ADAPTER, root / BASE, BASE, r=8, alpha=16, seed=3)
    shutil.copytree(root / BASE, root / BROKEN)
    shard = sorted((root / BROKEN).glob("*.safetensors"))[0]
    with shard.open("r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)


def clean_env(models: Path, db: Path) -> dict[str, str]:
    """The server's environment: this machine's own database, Redis or production settings must not
    leak in (the pictures show a fresh install), only the temp folders and the read cap."""
    env = server_env(models, db, MACTUNER_READ_LIMIT_MBPS=READ_LIMIT_MBPS, MACTUNER_TERMINAL_BARS="0")
    ours = {"MACTUNER_MODELS_DIR", "MACTUNER_SQLITE_PATH", "MACTUNER_READ_LIMIT_MBPS", "MACTUNER_TERMINAL_BARS"}
    for key in list(env):
        if key in {"DATABASE_URL", "REDIS_URL", "HF_HOME"} or (
            key.startswith(("MACTUNER_", "DJANGO_")) and key not in ours
        ):
            del env[key]
    env["DJANGO_SETTINGS_MODULE"] = "mactuner_site.settings"
    return env


def create_superuser(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", USER, "--email", "admin@example.com"],
        cwd=ROOT, env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def wait(view: View, state: str, predicate: str, timeout: int = TIMEOUT_MS) -> None:
    """``predicate`` is an arrow function's source: the page's CSP forbids eval of a bare expression."""
    try:
        view.page.wait_for_function(predicate, timeout=timeout)
    except Exception as exc:  # Playwright's TimeoutError, or the page went away
        raise StateNotReached(
            f"state {state!r} not reached in {view.name} within {timeout / 1000:.0f} s: {predicate}"
        ) from exc


def job_is(cond: str) -> str:
    """A predicate on the page's current job (``j``), false while there is none."""
    return f"() => {{ const j = window.MACtuner && window.MACtuner.state.job; return !!j && ({cond}); }}"


def click_load(view: View, model: str) -> None:
    view.page.select_option("#model-select", model)
    view.page.click("#load-btn")


def shoot(view: View, state: str, out: Path, focus: str | None, problems: list[str]) -> Path:
    """One viewport picture (not the full page: what a user sees, and ~60 KB; Chromium's own PNG
    deflate already beats zlib's level 9, so nothing recompresses it), with ``focus``
    scrolled into view, then the checks a reader of the picture would make."""
    page = view.page
    if focus:  # centred when it is not all on screen already (a phone's card, history and progress)
        page.locator(focus).first.evaluate(
            "e => { const r = e.getBoundingClientRect(); if (r.top < 0 || r.bottom > innerHeight)"
            " e.scrollIntoView({block: r.height > innerHeight ? 'start' : 'center'}); }"
        )
    path = out / f"{state}-{view.name}.png"
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    if view.size == "phone" and width > SIZES["phone"][0]:
        problems.append(f"{path.name}: the page is {width} px wide on a {SIZES['phone'][0]} px screen")
    if view.lang == "en":
        text = page.evaluate("() => document.body.innerText").replace("한국어", "")  # the menu names Korean in Korean
        korean = sorted({line.strip() for line in text.splitlines() if HANGUL.search(line)})
        if korean:
            problems.append(f"{path.name}: Korean in the English page: {korean[:3]}")
    return path


def every(views: list[View], state: str, predicate: str, out: Path, focus: str | None, problems: list[str]) -> None:
    for view in views:
        wait(view, state, predicate)
        shoot(view, state, out, focus, problems)


def open_views(browser: Any, url: str) -> list[View]:
    """A tab per language and size, each a browser of its own (language, cookies, time zone); a
    phone is a touch screen with the page's mobile viewport."""
    views = []
    for lang, locale in LANGS.items():
        for size, (w, h) in SIZES.items():
            phone = size == "phone"
            context = browser.new_context(
                locale=locale, viewport={"width": w, "height": h}, is_mobile=phone, has_touch=phone,
                color_scheme="light", timezone_id="Asia/Seoul" if lang == "ko" else "UTC",
            )  # fmt: skip
            view = View(lang, size, context.new_page())
            view.page.goto(url + "/")
            views.append(view)
    return views


def admin_states(views: list[View], url: str, job_id: int, out: Path, problems: list[str]) -> None:
    """The admin's job list and one job's page (its stage chart), logged in as a user would."""
    for view in views:
        page = view.page
        page.goto(url + "/admin/login/?next=/admin/loader/loadjob/")
        page.fill("#id_username", USER)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        wait(view, "admin", "() => document.querySelectorAll('#result_list tbody tr').length >= 4")
        page.wait_for_load_state("networkidle")  # the admin's icons are CSS backgrounds, fetched after the rows
        shoot(view, "admin", out, None, problems)
        page.goto(f"{url}/admin/loader/loadjob/{job_id}/change/")
        wait(view, "admin-job", "() => document.querySelectorAll('.stage-chart .seg').length >= 4")
        page.wait_for_load_state("networkidle")
        shoot(view, "admin-job", out, ".stage-chart", problems)


def run(out: Path, chromium: str | None, work: Path) -> list[str]:
    """Pass through the states in a user's order on one server; returns the problems the checks saw."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    models, db = work / "models", work / "db.sqlite3"
    t0 = time.monotonic()
    write_models(models)
    env = clean_env(models, db)
    migrate(env)
    create_superuser(env)
    server = LiveServer(env).start()
    try:
        server.wait_warm()  # imports done: the loading shot catches the weights stage, not the imports
        print(f"  models and server ready in {time.monotonic() - t0:.0f} s ({server.url})", flush=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=ARGS)
            views = open_views(browser, server.url)
            driver = views[0]  # clicks happen in one tab; the others follow over the websocket, as viewers do

            # Settled: the models listed and, where the page has fit hints, the picker's verdicts in.
            every(views, "idle", "() => window.MACtuner && window.MACtuner.modelsLoaded && (!document.getElementById"
                  "('fit-note') || !!document.querySelector('#model-select option[data-fit]'))", out, None, problems)  # fmt: skip

            click_load(driver, BIG)
            every(views, "loading", job_is(
                "j.active && j.stage === 'weights' && /\\d+\\/\\d+/.test(document.getElementById('progress-detail').textContent)"
                " && document.getElementById('progress-detail').textContent.includes('MB/s')"
            ), out, "#progress-box", problems)  # fmt: skip

            driver.page.click("#cancel-btn")
            every(views, "cancelled", job_is("j.state === 'cancelled'"), out, "#progress-box", problems)

            click_load(driver, BROKEN)
            every(views, "failed", job_is(
                f"j.model === '{BROKEN}' && j.state === 'failed' && document.getElementById('progress-box').classList.contains('error')"
                " && document.getElementById('progress-title').textContent.startsWith('❌')"
            ), out, "#progress-box", problems)  # fmt: skip

            click_load(driver, BIG)
            every(views, "succeeded", job_is(
                f"j.model === '{BIG}' && j.state === 'succeeded' && !document.getElementById('metadata-card').hidden"
            ), out, "#metadata-card", problems)  # fmt: skip
            succeeded_id = int(driver.page.evaluate("() => window.MACtuner.state.job.id"))

            click_load(driver, ADAPTER)
            every(views, "adapter", job_is(
                f"j.model === '{ADAPTER}' && j.state === 'succeeded' && !document.getElementById('metadata-card').hidden"
                " && document.getElementById('meta-list').textContent.includes('LORA')"
            ), out, "#metadata-card", problems)  # fmt: skip

            # Unloaded, the card goes and the last load's stage chart stays beside the history.
            driver.page.click("#unload-btn")
            every(views, "history", job_is(
                "document.getElementById('metadata-card').hidden && !document.getElementById('stage-chart').hidden"
                " && document.querySelectorAll('#history-body tr').length >= 4"
            ), out, "#history", problems)  # fmt: skip

            admin_states(views, server.url, succeeded_id, out, problems)
            browser.close()
    finally:
        server.stop()
    return problems


@contextmanager
def terminated_cleanly() -> Iterator[None]:
    """SIGTERM runs the same clean-up as Ctrl-C: the server and the temp folder never outlive the run."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def preconditions(chromium: str | None) -> str | None:
    """What would make the pictures wrong before a server starts: no browser, or no Korean font
    (Chromium then draws every Hangul letter as an empty box and the Korean pictures lie)."""
    if chromium and not Path(chromium).exists():
        return f"no Chromium at {chromium} (Debian: apt-get install chromium; or --chromium PATH)"
    if shutil.which("fc-list"):
        fonts = subprocess.run(["fc-list", ":lang=ko", "family"], capture_output=True, text=True).stdout
        if not fonts.strip():
            return "no Korean font installed (Debian: apt-get install fonts-nanum fonts-noto-color-emoji)"
    return None


def server_log_tail(work: Path, lines: int = 40) -> str:
    """The server's own words on a failure (its access lines left out: they say nothing of why)."""
    log = next(work.glob("*.log"), None)
    if not log:
        return ""
    said = [line for line in log.read_text(errors="replace").splitlines() if not ACCESS_LINE.match(line)]
    return "\n--- server log (" + log.name + ") ---\n" + "\n".join(said[-lines:])


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import Error as PlaywrightError

    p = argparse.ArgumentParser(description="Screenshot every state of the loader page in both languages and sizes.")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    p.add_argument("--chromium", default=CHROMIUM, help="the browser to drive ('' for Playwright's own)")
    args = p.parse_args(argv)
    chromium = args.chromium or None
    reason = preconditions(chromium)
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mactuner-shots-"))
    try:
        with terminated_cleanly():
            problems = run(args.out.resolve(), chromium, work)
    except (StateNotReached, PlaywrightError, subprocess.CalledProcessError, TimeoutError) as exc:
        print(f"screenshots: {exc}{server_log_tail(work)}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    files = sorted(args.out.glob("*.png"))
    total = sum(f.stat().st_size for f in files)
    print(f"screenshots: {len(files)} files, {total / 1e6:.1f} MB in {args.out} ({time.monotonic() - started:.0f} s)")
    for problem in problems:
        print(f"screenshots: problem: {problem}", file=sys.stderr)
    return 2 if problems else 0  # the pictures are written either way: they show the problems


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
