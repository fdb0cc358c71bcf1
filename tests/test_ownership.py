"""One truth about loaded models across server processes: status, unload and cancel on any server."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from .conftest import REDIS_URL, Api, SocketWatcher, job_of, require_service

pytestmark = pytest.mark.services


def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


def test_every_server_shows_unloads_and_cancels_the_model_another_server_holds(live_server_factory: Any) -> None:
    require_service("Redis", 6379)
    a = live_server_factory(REDIS_URL=REDIS_URL, MACTUNER_READ_LIMIT_MBPS="30")
    b = live_server_factory(REDIS_URL=REDIS_URL, MACTUNER_READ_LIMIT_MBPS="30")
    api_a, api_b = Api(a), Api(b)
    status, body = api_a.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})
    assert status == 202
    api_a.wait_idle()
    loaded = _until(lambda: api_b.status()["loaded"])
    assert loaded["name"] == "tiny" and loaded["owner"]["pid"] == a.proc.pid
    watcher = SocketWatcher(b)
    assert watcher.next()["loaded"]["name"] == "tiny", "a dashboard on B shows what A holds"

    status, body = api_b.call("POST", "/api/unload")
    assert status == 200 and body["unloaded"] is True
    assert api_a.status()["loaded"] is None and api_b.status()["loaded"] is None
    watcher.until(lambda m: m["loaded"] is None, timeout=10)

    status, body = api_a.call("POST", "/api/load", {"model": "medium", "device": "cpu"})
    assert status == 202
    api_a.wait_stage("weights", timeout=30)
    asked = time.monotonic()
    status, body = api_b.call("POST", "/api/cancel")
    assert status == 202
    final = watcher.until(lambda m: job_of(m).get("id") == body["job"]["id"] and not job_of(m)["active"])
    assert job_of(final)["state"] == "cancelled"
    assert time.monotonic() - asked < 5, "a cancel sent to B reaches A's load at once"
    watcher.close()


def test_a_dead_servers_model_stops_showing_as_loaded(live_server_factory: Any) -> None:
    a = live_server_factory()
    api_a = Api(a)
    assert api_a.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})[0] == 202
    assert api_a.wait_idle()["job"]["state"] == "succeeded"
    assert api_a.status()["loaded"]["name"] == "tiny"
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    b = live_server_factory()
    state = Api(b).status()
    assert state["loaded"] is None, "a model whose process died is not loaded anywhere"
    assert state["job"]["state"] == "succeeded", "history stays"
