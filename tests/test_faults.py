"""Faults: a killed server, a crashing load thread, Redis going away, clients that never read.

Run just these with: bash scripts/test.sh tests/test_faults.py
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import pytest

from loader.jobs.local import MODEL_HOST

from .conftest import Api, SocketWatcher, db_rows, free_port, job_of, wait_finished, wait_port


def test_server_killed_mid_load_is_interrupted_at_next_start(live_server_factory: Any) -> None:
    first = live_server_factory(MACTUNER_READ_LIMIT_MBPS="15")
    api = Api(first)
    assert api.call("POST", "/api/load", {"model": "tiny"})[0] == 202
    assert api.wait_idle()["job"]["state"] == "succeeded"
    assert api.call("POST", "/api/load", {"model": "medium"})[0] == 202
    api.wait_stage("weights")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)

    second = live_server_factory()
    api = Api(second)
    job = api.status()["job"]
    assert job["state"] == "interrupted" and not job["active"]
    assert "중단" in job["error"]["message"]
    rows = db_rows(second)
    assert [r["state"] for r in rows] == ["succeeded", "interrupted"], "history from before the crash is kept"
    status, body = api.call("POST", "/api/load", {"model": "tiny"})
    assert status == 202
    assert api.wait_idle()["job"]["state"] == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_unexpected_exception_in_the_load_fails_the_job_and_server_keeps_serving(client: Any, test_host: Any) -> None:
    test_host("broken_metadata")
    res = client.post("/api/load", data={"model": "tiny"}, content_type="application/json")
    assert res.status_code == 202
    job = wait_finished(res.json()["job"]["id"], timeout=90)
    assert job.state == "failed" and job.error_code == "internal"
    assert "ZeroDivisionError" in job.error_detail
    assert MODEL_HOST.model is None and not MODEL_HOST.busy
    assert client.get("/api/status").status_code == 200
    from loader.host.supervisor import HOST_ARGV

    MODEL_HOST.argv = HOST_ARGV  # the bug fixed: the next load works
    MODEL_HOST.recycle("fixed")
    res = client.post("/api/load", data={"model": "tiny"}, content_type="application/json")
    assert res.status_code == 202
    assert wait_finished(res.json()["job"]["id"], timeout=90).state == "succeeded"
    MODEL_HOST.unload()


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    return proc


def test_redis_restart_mid_load_keeps_the_load_and_clients_see_the_end(live_server_factory: Any) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis = _start_redis(port)
    try:
        server = live_server_factory(REDIS_URL=f"redis://127.0.0.1:{port}/0", MACTUNER_READ_LIMIT_MBPS="25").wait_warm()
        api = Api(server)
        watcher = SocketWatcher(server)
        watcher.next()
        assert api.call("POST", "/api/load", {"model": "medium"})[0] == 202
        api.wait_stage("weights")
        redis.kill()
        redis.wait(10)
        time.sleep(1.0)
        redis = _start_redis(port)
        final = api.wait_idle()
        assert final["job"]["state"] == "succeeded" and final["loaded"]["name"] == "medium"
        watcher.close()
        late = SocketWatcher(server)  # a client reconnecting after the outage sees the true end
        first = late.next()
        assert job_of(first)["state"] == "succeeded" and first["loaded"]["name"] == "medium"
        late.close()
    finally:
        redis.kill()


def test_clients_that_never_read_do_not_stop_the_load_or_other_clients(live_server_factory: Any) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="60").wait_warm()
    stuck = []
    for _ in range(5):  # complete the websocket handshake, then never read a byte
        s = socket.create_connection(("127.0.0.1", server.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(
            f"GET /ws/loader/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nOrigin: http://127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        stuck.append(s)
    watcher = SocketWatcher(server)
    watcher.next()
    api = Api(server)
    assert api.call("POST", "/api/load", {"model": "medium"})[0] == 202
    final = watcher.until(lambda m: bool(job_of(m)) and not job_of(m)["active"])
    assert job_of(final)["state"] == "succeeded"
    assert sum(job_of(m).get("stage") == "weights" for m in watcher.messages) >= 5
    for s in stuck:
        s.close()
    watcher.close()


def test_websocket_reconnect_mid_load_gets_the_current_state_first(live_server_factory: Any) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="30").wait_warm()
    api = Api(server)
    first = SocketWatcher(server)
    first.next()
    assert api.call("POST", "/api/load", {"model": "medium"})[0] == 202
    seen = first.until(lambda m: job_of(m).get("stage") == "weights" and job_of(m)["percent"] > 45)
    first.close()
    again = SocketWatcher(server)
    snap = again.next()
    assert job_of(snap)["id"] == job_of(seen)["id"] and job_of(snap)["state"] == "running"
    assert job_of(snap)["percent"] >= job_of(seen)["percent"]
    again.until(lambda m: bool(job_of(m)) and not job_of(m)["active"])
    again.close()
