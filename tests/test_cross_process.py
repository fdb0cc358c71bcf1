"""The same job, every viewer, any process: CLI and several servers, Redis and in-memory layers."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import POSTGRES_URL, PYTHON, REDIS_URL, ROOT, LiveServer, SocketWatcher, job_of, require_service

pytestmark = pytest.mark.services


def post_load(server: LiveServer, model: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/")
    res = conn.getresponse()
    res.read()
    cookie = res.getheader("Set-Cookie", "")
    token = cookie.split("csrftoken=")[1].split(";")[0]
    body = json.dumps({"model": model, "device": "cpu", "dtype": "auto"})
    headers = {"Content-Type": "application/json", "X-CSRFToken": token, "Cookie": f"csrftoken={token}"}
    conn.request("POST", "/api/load", body=body, headers=headers)
    res = conn.getresponse()
    return res.status, json.loads(res.read())


def cli(server: LiveServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", *args], cwd=ROOT, env=server.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finished(msg: dict[str, object]) -> bool:
    job = job_of(msg)
    return bool(job) and not job["active"]


def test_cli_load_streams_live_to_the_dashboard_over_redis(live_server_factory: object) -> None:
    require_service("Redis", 6379)
    server = live_server_factory(REDIS_URL=REDIS_URL, MACTUNER_READ_LIMIT_MBPS="10")  # type: ignore[operator]  # reads outlast the CLI host's imports
    watcher = SocketWatcher(server)
    assert watcher.next()["type"] == "snapshot"
    proc = cli(server, "medium")
    final = watcher.until(finished)
    assert proc.wait(60) == 0
    job = job_of(final)
    assert job["state"] == "succeeded" and job["source"] == "cli" and job["percent"] == 100
    running = [job_of(m) for m in watcher.messages if job_of(m).get("state") == "running"]
    assert len({j["stage"] for j in running}) >= 3, "stages must stream live, not only the end"
    weights = [j for j in running if j["stage"] == "weights"]
    assert len(weights) >= 5 and weights[-1]["percent"] > weights[0]["percent"]
    during = [m for m in watcher.messages if job_of(m).get("stage") == "weights"]
    gaps = [b["_received"] - a["_received"] for a, b in zip(during, during[1:], strict=False)]
    assert max(gaps) < 1.0, f"a viewer went {max(gaps):.2f}s without a weights update"
    watcher.close()


def test_two_servers_stream_the_same_web_job(live_server_factory: object) -> None:
    require_service("Redis", 6379)
    a = live_server_factory(REDIS_URL=REDIS_URL, MACTUNER_READ_LIMIT_MBPS="60")  # type: ignore[operator]
    b = live_server_factory(REDIS_URL=REDIS_URL, MACTUNER_READ_LIMIT_MBPS="60")  # type: ignore[operator]
    wa, wb = SocketWatcher(a), SocketWatcher(b)
    wa.next(), wb.next()
    status, body = post_load(a, "medium")
    assert status == 202
    job_id = body["job"]["id"]  # type: ignore[index]
    status, refused = post_load(b, "tiny")
    assert status == 409, "the other server must see the active job too"
    fa, fb = wa.until(finished), wb.until(finished)
    assert job_of(fa)["id"] == job_of(fb)["id"] == job_id
    assert job_of(fa)["state"] == job_of(fb)["state"] == "succeeded"
    assert sum(job_of(m).get("state") == "running" for m in wb.messages) >= 3
    wa.close(), wb.close()


def test_cli_job_appears_on_the_in_memory_dashboard(live_server_factory: object) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="40")  # type: ignore[operator]
    watcher = SocketWatcher(server)
    watcher.next()
    proc = cli(server, "medium")
    seen = watcher.until(lambda m: job_of(m).get("state") == "running", timeout=30)
    assert job_of(seen)["source"] == "cli"
    final = watcher.until(finished)
    assert proc.wait(60) == 0 and job_of(final)["state"] == "succeeded"


def test_core_suite_passes_on_postgresql(tmp_path: Path) -> None:
    require_service("PostgreSQL", 5432)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["DATABASE_URL"] = POSTGRES_URL
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_web_api.py", "tests/test_websocket.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
