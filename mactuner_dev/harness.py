"""Live-server harness shared by the tests and the benchmarks: daphne processes, an HTTP client
with the CSRF cookie a browser would have, and a websocket recorder. Dev-only, never imported at
runtime."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REDIS_URL = os.environ.get("MACTUNER_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
POSTGRES_URL = os.environ.get("MACTUNER_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mactuner")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} did not open")


def server_env(models_root: Path, db_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="mactuner_site.settings",
        MACTUNER_MODELS_DIR=str(models_root),
        MACTUNER_SQLITE_PATH=str(db_path),
        HF_HUB_CACHE=str(models_root / ".no-hf-cache"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)


class LiveServer:
    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.env, self.port = env, port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.log = open(Path(self.env["MACTUNER_SQLITE_PATH"]).with_suffix(f".{self.port}.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "mactuner_site.asgi:application"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_port(self.port)
        return self

    def wait_warm(self, timeout: float = 120) -> LiveServer:
        """Wait until the server's start-up import of torch/transformers is done (its log says so).

        A load clicked earlier reads its weights while the imports run, so its weights stage is
        short; tests that watch a long weights stage start after this.
        """
        from loader.host.supervisor import READY_LINE

        path = Path(self.log.name)
        deadline = time.monotonic() + timeout
        while READY_LINE not in path.read_text(errors="replace"):
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                raise TimeoutError(f"server on port {self.port} never finished its imports (see {path})")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class SocketWatcher:
    """A websocket client of a live server that records every snapshot it receives."""

    def __init__(self, server: LiveServer) -> None:
        from contextlib import ExitStack

        from websockets.sync.client import connect

        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{server.port}/ws/loader/", origin=f"http://127.0.0.1:{server.port}")  # type: ignore[arg-type]
        )
        self.messages: list[dict[str, object]] = []

    def next(self, timeout: float = 30) -> dict[str, object]:
        import json

        msg = json.loads(self.ws.recv(timeout=timeout))
        msg["_received"] = time.monotonic()
        self.messages.append(msg)
        return msg

    def until(self, predicate: object, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(timeout=max(deadline - time.monotonic(), 0.01))
            if predicate(msg):  # type: ignore[operator]
                return msg

    def close(self) -> None:
        self._stack.close()


def job_of(msg: dict[str, object]) -> dict[str, object]:
    return msg.get("job") or {}  # type: ignore[return-value]


class Api:
    """A tiny HTTP client for a live server, with the CSRF cookie a browser would have."""

    def __init__(self, server: LiveServer) -> None:
        import http.client

        self.server = server
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/")
        res = conn.getresponse()
        res.read()
        self.token = res.getheader("Set-Cookie", "").split("csrftoken=")[1].split(";")[0]
        self.headers: dict[str, str] = {}  # added to every call (e.g. Accept-Language)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
        import http.client
        import json

        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        headers = {"Content-Type": "application/json", "X-CSRFToken": self.token, "Cookie": f"csrftoken={self.token}"}
        headers |= self.headers
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        res = conn.getresponse()
        raw = res.read()
        try:
            return res.status, json.loads(raw)
        except ValueError:
            return res.status, {"raw": raw[:500].decode(errors="replace")}

    def status(self) -> dict[str, object]:
        return self.call("GET", "/api/status")[1]

    def wait_idle(self, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.status()
            job = state.get("job")
            if not job or not job["active"]:  # type: ignore[index]
                return state
            time.sleep(0.1)
        raise TimeoutError("job still active")

    def wait_stage(self, stage: str, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.status().get("job") or {}
            if job.get("stage") == stage and job.get("active"):  # type: ignore[union-attr]
                return job  # type: ignore[return-value]
            time.sleep(0.05)
        raise TimeoutError(f"never reached {stage}")


def db_rows(server: LiveServer) -> list[dict[str, object]]:
    import sqlite3

    with sqlite3.connect(server.env["MACTUNER_SQLITE_PATH"]) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("select * from loader_loadjob order by id")]


WEBSOCKET_HANDSHAKE = (
    "GET /ws/loader/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def open_silent(port: int, n: int, first_bytes: str = WEBSOCKET_HANDSHAKE) -> list[socket.socket]:
    """``n`` connections that send ``first_bytes`` (by default a websocket handshake: the server
    sees a viewer) and then never read a byte (4 KB receive buffer)."""
    crowd = []
    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(first_bytes.format(port=port).encode())
        crowd.append(s)
        if i % 40 == 39:
            time.sleep(0.05)  # daphne's listen backlog is 50
    return crowd
