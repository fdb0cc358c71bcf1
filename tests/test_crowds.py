"""Crowds against live daphne servers: viewers that never read, clients that never finish
their headers, a file limit of 256, and a huge config.json while the list is read (issue #10,
item 7). Latencies are measured in bench/crowd.py; here only what must hold."""

from __future__ import annotations

import http.client
import json
import resource
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mactuner_dev.harness import open_silent

from .conftest import PYTHON, ROOT, Api, LiveServer, SocketWatcher, job_of, migrate, server_env, wait_port

TCP_ESTABLISHED = 1


def closed_by_server(s: socket.socket) -> bool:
    """Whether the server has closed or reset ``s``, without reading what it holds."""
    if hasattr(socket, "TCP_INFO"):  # Linux: the connection's state, data left unread
        state = struct.unpack("B", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
        return bool(state != TCP_ESTABLISHED)
    s.setblocking(False)  # elsewhere: drain and look for the end
    try:
        while chunk := s.recv(1 << 16):
            del chunk
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_all_closed(crowd: list[socket.socket], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        open_ones = [s for s in crowd if not closed_by_server(s)]
        if not open_ones:
            return 0
        time.sleep(0.5)
    return len(open_ones)


def test_viewers_that_never_read_are_dropped_and_slow_nothing(live_server_factory: Any) -> None:
    server = live_server_factory(
        MACTUNER_READ_LIMIT_MBPS="60", MACTUNER_WS_UNREAD_BYTES="8192", MACTUNER_WS_SNDBUF_BYTES="4096"
    ).wait_warm()
    crowd = open_silent(server.port, 320)
    try:
        watcher = SocketWatcher(server)
        watcher.next()
        api = Api(server)
        assert api.call("POST", "/api/load", {"model": "medium"})[0] == 202
        answered = 0
        while True:  # /api/status answers all through the load
            status, body = api.call("GET", "/api/status")
            assert status == 200
            answered += 1
            job: dict[str, Any] = body["job"] or {}  # type: ignore[assignment]
            if not job.get("active", True):
                break
            time.sleep(0.1)
        assert answered > 1 and job["state"] == "succeeded"
        final = watcher.until(lambda m: bool(job_of(m)) and not job_of(m)["active"])
        assert job_of(final)["state"] == "succeeded" and final["loaded"]["name"] == "medium"  # type: ignore[index]
        assert sum(job_of(m).get("stage") == "weights" for m in watcher.messages) >= 3
        # Their buffers are full by now (or after a second load): the server closed every one.
        if wait_all_closed(crowd, timeout=5):
            assert api.call("POST", "/api/load", {"model": "tiny"})[0] == 202
            api.wait_idle()
        assert wait_all_closed(crowd, timeout=20) == 0
        # The reading viewer was not dropped with them.
        assert api.call("POST", "/api/load", {"model": "tiny"})[0] == 202
        again = watcher.until(lambda m: bool(job_of(m)) and not job_of(m)["active"] and job_of(m)["model"] == "tiny")
        assert job_of(again)["state"] == "succeeded"
        watcher.close()
    finally:
        for s in crowd:
            s.close()


def start_with_file_limit(env: dict[str, str], soft: int) -> LiveServer:
    """A daphne started the way a Mac starts it: 256 open files unless the process raises it."""
    server = LiveServer(env)
    server.log = open(Path(env["MACTUNER_SQLITE_PATH"]).with_suffix(f".{server.port}.log"), "wb")  # noqa: SIM115
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    server.proc = subprocess.Popen(
        [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(server.port), "mactuner_site.asgi:application"],
        cwd=ROOT, env=env, stdout=server.log, stderr=subprocess.STDOUT, preexec_fn=low_limit,
    )  # fmt: skip
    wait_port(server.port)
    return server


def soft_file_limit(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except OSError:
        pass
    return None


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file limits")
def test_unfinished_headers_time_out_and_a_256_file_limit_is_raised(models_root: Path, tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard open-file limit here is {hard}: nothing to raise to")
    env = server_env(models_root, tmp_path / "limits.sqlite3", MACTUNER_HTTP_HEADER_TIMEOUT_S="4")
    migrate(env)
    server = start_with_file_limit(env, soft=256)
    crowd: list[socket.socket] = []
    try:
        viewer = SocketWatcher(server)  # a websocket must outlive the header timeout
        viewer.next()
        crowd = open_silent(server.port, 300, "GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n")
        raised = soft_file_limit(server.proc.pid)  # type: ignore[union-attr]
        assert raised is None or raised > 256
        api = Api(server)  # more descriptors than 256 are open in the server now, and it serves
        assert api.call("GET", "/api/status")[0] == 200
        assert api.call("GET", "/api/models")[0] == 200
        assert wait_all_closed(crowd, timeout=4 + 20) == 0  # never finished their headers: closed
        assert api.call("GET", "/api/status")[0] == 200
        viewer.ws.send('{"type": "refresh"}')
        assert viewer.next(timeout=10)["type"] == "snapshot"  # the websocket was not cut
        viewer.close()
    finally:
        for s in crowd:
            s.close()
        server.stop()


def test_a_huge_config_does_not_hold_status_while_the_list_is_read(
    live_server_factory: Any, models_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(models_root / "tiny", root / "tiny")
    big = [("huge-config", 100 * 2**20)] + [(f"big-config-{i}", 15 * 2**20) for i in range(8)]  # 15 MB: parsed
    for name, size in big:
        (root / name).mkdir()
        with (root / name / "config.json").open("w") as fh:  # valid JSON: one long string field
            fh.write('{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "pad": "')
            fh.write("x" * size)
            fh.write('"}')
    server = live_server_factory(MACTUNER_MODELS_DIR=str(root))
    done: list[tuple[str, int, float]] = []
    listed: list[set[str]] = []

    def get(path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", path)
        res = conn.getresponse()
        body = json.loads(res.read())
        done.append((path, res.status, time.monotonic()))
        if path == "/api/models":
            listed.append({m["name"] for m in body["models"]})

    listers = [threading.Thread(target=get, args=("/api/models",)) for _ in range(10)]
    lists_sent = time.monotonic()
    for t in listers:
        t.start()
    time.sleep(0.3)  # the ten lists are in the server before the first status request
    status_sent = time.monotonic()
    get("/api/status")
    while any(t.is_alive() for t in listers):
        get("/api/status")
    for t in listers:
        t.join()
    assert [status for _path, status, _t in done] == [200] * len(done)
    assert len(listed) == 10 and all({"tiny", *(name for name, _size in big)} <= names for names in listed)
    # A status queued behind the lists would take at least as long as one of them.
    first_status = min(t for path, _s, t in done if path == "/api/status")
    first_list = min(t for path, _s, t in done if path == "/api/models")
    assert first_status - status_sent < first_list - lists_sent, "/api/status waited for a list"
