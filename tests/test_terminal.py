"""The server's terminal shows every load with the CLI's bars (FAQ Q10), read through a real pty."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tqdm import tqdm

from loader.web.terminal import TerminalBars

from .conftest import PYTHON, ROOT, Api, free_port, migrate, server_env, wait_port

STAGES = ("preparing", "tokenizer", "config", "weights", "device", "metadata")


class PtyServer:
    """daphne with a pseudo-terminal as stdout/stderr, as when a user runs it in a terminal."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "mactuner_site.asgi:application"],
            cwd=ROOT, env=env, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(slave)
        self.master, self.chunks = master, bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_port(self.port)

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # EIO once the server's side closes
            while data := os.read(self.master, 65536):
                self.chunks += data

    def output(self) -> str:
        return bytes(self.chunks).decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output()):
                return self.output()
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never appeared in:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.reader.join(5)
        os.close(self.master)


@pytest.fixture
def pty_server(models_root: Path, tmp_path: Path) -> Iterator[Any]:
    servers: list[PtyServer] = []

    def make(**extra: str) -> PtyServer:
        # The terminal speaks its own LANG (Korean unless it names English): fixed here, not the CI's.
        env = server_env(models_root, tmp_path / f"db{len(servers)}.sqlite3", **({"LANG": "C.UTF-8"} | extra))
        env.pop("LC_ALL", None), env.pop("LC_MESSAGES", None)
        migrate(env)
        servers.append(PtyServer(env))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def load(server: PtyServer, model: str, lang: str = "ko") -> dict[str, Any]:
    """Load through the HTTP API as a browser in ``lang`` would, polling the status meanwhile
    (each poll is an access-log line written while the bars are on screen)."""
    api = Api(server)  # type: ignore[arg-type]
    api.headers = {"Accept-Language": lang}
    status, body = api.call("POST", "/api/load", {"model": model, "device": "cpu"})
    assert status == 202, body
    return api.wait_idle()["job"]  # type: ignore[return-value]


def stage_lines(text: str, job_id: int) -> dict[str, float]:
    found = re.findall(rf"#{job_id} \S+(?: \S+)? \((\w+)\): (\d+\.\d\d)s", text)
    return {stage: float(secs) for stage, secs in found}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:INFO|WARNING|ERROR) ")
ACCESS_LINE = re.compile(r"127\.0\.0\.1:\d+ - - \[")


def assert_clean_terminal(raw: str, job_id: int) -> str:
    """What a person sees go wrong in a terminal: a log or access line starting in the middle of a
    bar's row (the bar's next redraw splits or overdraws it), a bar drawn into a log line's row,
    and a line printed twice (once bare, once with a timestamp). Returns the text without ANSI."""
    text = ANSI.sub("", raw).replace("\r\n", "\n")  # the pty turns each newline into CR LF
    for pattern in (LOG_LINE, ACCESS_LINE):
        for found in pattern.finditer(text):
            line = text[found.start() : text.find("\n", found.start())]
            assert found.start() == 0 or text[found.start() - 1] in "\r\n", (
                f"written into a bar: {text[found.start() - 80 : found.end()]!r}"
            )
            assert "\r" not in line and "%|" not in line, f"a bar drawn into a log line: {line!r}"
    started = [row for row in text.splitlines() if f"#{job_id}: " in row and "(web" in row or "(cli" in row]
    assert len(started) == 1 and LOG_LINE.match(started[0].split("\r")[-1]), f"the start line, once: {started}"
    for stage in STAGES:
        rows = [row for row in text.split("\n") if f"#{job_id} " in row and f"({stage}):" in row]
        assert len(rows) == 1, f"the {stage} line printed {len(rows)} times: {rows}"
    return text


def test_web_load_draws_both_bars_and_logs_each_stage_in_the_server_terminal(pty_server: Any) -> None:
    server = pty_server(MACTUNER_READ_LIMIT_MBPS="100")  # long enough for several shard redraws
    job = load(server, "medium", lang="en")  # an English browser; the terminal's LANG is not English
    assert job["state"] == "succeeded"
    raw = server.wait_for(rf"✅ 모델 로드 완료! #{job['id']} medium")
    assert f"#{job['id']} medium (cpu, {job['dtype']}, {job['wall_s']:.2f}s)" in raw, "click to ready, as the page"
    text = assert_clean_terminal(raw, job["id"])
    assert re.search(r"\[4/6\] 가중치 · 전체\s+\d+%\|", text), "the overall bar names the stage, not the shards"
    assert "Loading checkpoint shards..." not in text and "Model loaded" not in text, (
        "the terminal's language, not the requester's"
    )
    assert re.search(r"✅ 모델 로드 완료!\s+100%\|", text), "overall bar ends at 100%"
    shards = {int(k) for k in re.findall(r"Loading checkpoint shards:.*?shard (\d)/4", text)}
    assert 4 in shards and min(shards) < 4, shards
    total = tqdm.format_sizeof(job["detail"]["bytes_total"], divisor=1000)
    assert re.search(rf"Loading checkpoint shards: 100%\|[^|]*\| {re.escape(total)}/{re.escape(total)} ", text)
    assert set(stage_lines(text, job["id"])) == set(STAGES)
    assert len(ACCESS_LINE.findall(text)) > 3, "the status polls were logged (and checked above)"


def test_bars_off_keeps_the_stage_log_lines(pty_server: Any) -> None:
    server = pty_server(MACTUNER_TERMINAL_BARS="0")
    job = load(server, "tiny")
    text = server.wait_for(rf"✅ 모델 로드 완료! #{job['id']} tiny")
    assert "Loading checkpoint shards" not in text and "%|" not in text
    assert set(stage_lines(text, job["id"])) == set(STAGES)


def test_cli_load_shows_in_the_server_terminal_with_no_page_open_in_its_language(
    pty_server: Any, models_root: Path, tmp_path: Path
) -> None:
    """Without Redis the server hears a ``loadmodel`` run only through the database: its terminal
    watches it for as long as it runs (README: every load, web or CLI, shows there)."""
    server = pty_server(LANG="en_US.UTF-8")
    server.wait_for(r"Listening on TCP address")
    # Slow enough that the weights stage outlasts the CLI host's imports (reads start during them).
    env = server_env(models_root, tmp_path / "db0.sqlite3", MACTUNER_READ_LIMIT_MBPS="10", LANG="ko_KR.UTF-8")
    env.pop("LC_ALL", None), env.pop("LC_MESSAGES", None)
    cli = subprocess.run(
        [PYTHON, "manage.py", "loadmodel", "medium", "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "Loading checkpoint shards" in cli.stderr and "로드 시작" not in cli.stderr, (
        "the CLI draws its own bars once"
    )
    assert "[4/6] 가중치 · 전체" in cli.stderr, "the CLI in its own language"
    raw = server.wait_for(r"✅ Model loaded! #1 medium", timeout=60)
    text = assert_clean_terminal(raw, 1)
    assert "Load started #1: medium (cli" in text and "Loading checkpoint shards" in text
    assert re.search(r"✅ Model loaded!\s+100%\|", text) and "가중치" not in text


def snapshot(job_id: int, stage: str, percent: float, timings: dict[str, float], **job: Any) -> dict[str, Any]:
    detail = {"shard": 0, "shards": 2, "bytes_done": 0, "bytes_total": 2_000_000, "bytes_per_s": 0.0, "eta_s": None}
    detail.update(job.pop("detail", {}))
    base = {"id": job_id, "state": "running", "active": True, "model": "m", "source": "web", "owner": {"pid": 1}}
    return {
        "type": "snapshot",
        "job": base
        | {"stage": stage, "percent": percent, "message": stage, "detail": detail, "timings": timings}
        | job,
    }


def test_show_turns_a_snapshot_sequence_into_bars_and_lines(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    bars = TerminalBars(stream=stream, enabled=True, lang="ko")
    caplog.set_level(logging.INFO, logger="loader.terminal")
    sequence = [
        snapshot(7, "preparing", 0, {}),
        snapshot(7, "tokenizer", 5, {"preparing": 0.1}),
        snapshot(7, "config", 25, {"preparing": 0.1, "tokenizer": 0.2}),
        snapshot(7, "weights", 40, {"preparing": 0.1, "tokenizer": 0.2, "config": 0.3}, detail={"shard": 1}),
        snapshot(7, "weights", 60, {"preparing": 0.1, "tokenizer": 0.2, "config": 0.3}, detail={"shard": 1, "bytes_done": 900_000}),
        # The event that reached the total was throttled away: the next stage still carries it.
        snapshot(7, "device", 85, {"preparing": 0.1, "tokenizer": 0.2, "config": 0.3, "weights": 1.5}, detail={"shard": 2, "bytes_done": 2_000_000}),
    ]  # fmt: skip
    final = {
        "preparing": 0.1,
        "tokenizer": 0.2,
        "config": 0.3,
        "weights": 1.5,
        "device": 0.01,
        "metadata": 0.02,
        "total": 2.2,
    }
    sequence.append(snapshot(7, "done", 100, final, state="succeeded", active=False, device="cpu", dtype="float32"))
    sequence.append(sequence[-1])  # a repeated final snapshot (e.g. after an unload) adds nothing
    for state in sequence:
        bars.show(state)
    out = stream.getvalue()
    assert "Loading checkpoint shards: 100%" in out and "2.00M/2.00M " in out and "shard 2/2" in out
    assert re.search(r"done\s+100%\|", out)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split("(")[1].split(")")[0] for line in lines if line.startswith("#7 ")] == list(STAGES)
    assert sum("✅ 모델 로드 완료! #7 m (cpu, float32, 2.20s)" in line for line in lines) == 1


def test_show_ignores_jobs_it_did_not_see_run_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    bars = TerminalBars(stream=stream, enabled=True, lang="ko")
    caplog.set_level(logging.INFO, logger="loader.terminal")
    bars.show(snapshot(3, "done", 100, {"total": 1.0}, state="succeeded", active=False))
    bars.show({"type": "snapshot", "job": None, "loaded": None})
    bars.show({"type": "snapshot", "job": {"id": 4, "active": True, "percent": "not a number"}})
    assert stream.getvalue() == "" or "Loading checkpoint shards" not in stream.getvalue()
    assert not [r for r in caplog.records if "#3" in r.getMessage()]
    assert any("terminal progress failed" in r.getMessage() for r in caplog.records)
    bars.show(snapshot(5, "preparing", 0, {}))  # still works for the next job
    assert any("#5" in r.getMessage() for r in caplog.records)


class FullDisk(io.StringIO):
    """A terminal redirected to a file on a full disk: every write fails."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


def test_bars_on_a_full_disk_never_raise_nor_hold_the_lock_a_log_line_needs() -> None:
    """tqdm's refresh keeps its global lock when its write raises: once that happened, the next log
    line (the load thread's own) waited for it forever. Bars on an unwritable stream are skipped."""
    from loader.web.console import BarSafeHandler

    bars = TerminalBars(stream=FullDisk(), enabled=True, lang="ko")
    timings = {"preparing": 0.1, "tokenizer": 0.1, "config": 0.1}
    for state in (
        snapshot(9, "preparing", 0, {}),
        snapshot(9, "weights", 60, timings, detail={"shard": 1, "bytes_done": 900_000}),
        snapshot(9, "done", 100, {**timings, "weights": 1.0}, state="succeeded", active=False),
    ):
        bars.show(state)
    taken = threading.Event()

    def take_the_lock() -> None:
        tqdm.get_lock().acquire()  # its acquire(timeout=…) says nothing of success: block instead
        tqdm.get_lock().release()
        taken.set()

    other = threading.Thread(target=take_the_lock, daemon=True)  # left blocked if the lock leaked
    other.start()
    other.join(10)
    assert taken.is_set(), "tqdm's lock is still held after a failed draw"
    handler = BarSafeHandler(FullDisk())
    handler.handleError = lambda record: None  # type: ignore[method-assign]  # quiet: the point is it returns
    handler.handle(logging.LogRecord("loader", logging.ERROR, __file__, 1, "progress not saved", None, None))


@pytest.mark.parametrize("terminal", ["a pipe nobody reads", "closed"])
def test_a_terminal_nobody_reads_or_a_closed_one_never_stops_the_server_or_a_load(
    models_root: Path, tmp_path: Path, terminal: str
) -> None:
    """``daphne … | tee`` whose reader stalled: once the pipe is full a write waits forever. The
    access log is written on daphne's own loop: before, the whole server stopped answering."""
    env = server_env(models_root, tmp_path / "db.sqlite3")
    migrate(env)
    port = free_port()
    argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "mactuner_site.asgi:application"]
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe: full after a few lines
    if terminal == "closed":
        os.close(read_end)  # every write fails (EPIPE)
        read_end = -1
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end)
    os.close(write_end)
    try:
        wait_port(port)
        api = Api(type("Server", (), {"port": port})())  # type: ignore[arg-type]
        for _ in range(200):  # 200 access-log lines: far past what the pipe holds
            assert api.call("GET", "/api/status")[0] == 200
        for model in ("tiny", "tied"):  # bars and stage lines too
            status, body = api.call("POST", "/api/load", {"model": model, "device": "cpu"})
            assert status == 202, body
            assert api.wait_idle(120)["job"]["state"] == "succeeded"  # type: ignore[index]
        assert api.call("GET", "/api/fit?device=cpu")[0] == 200
    finally:
        proc.kill()
        proc.wait(10)
        if read_end >= 0:
            os.close(read_end)
