"""The model lives in its own process: a host that dies, hogs or babbles costs one load, never
the server; the web process never maps libtorch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from mactuner_dev import layouts

from .conftest import Api, wait_finished

CATASTROPHIC = "(.*.*.*.*.*.*.*.*.*.*.*.*.*.*)*XYZ"  # backtracks for ages on every module name


@pytest.fixture(scope="module")
def hog_root(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The usual models plus an adapter whose ``target_modules`` is a catastrophic regex."""
    root = tmp_path_factory.mktemp("hog")
    shutil.copytree(models_root / "tiny", root / "tiny")  # a copy: links out of the root are not offered
    layouts.write_lora(root / "regex-hog", models_root / "tiny", "tiny")
    config = json.loads((root / "regex-hog" / "adapter_config.json").read_text())
    config["target_modules"] = CATASTROPHIC
    (root / "regex-hog" / "adapter_config.json").write_text(json.dumps(config))
    return root


def host_of(server: Any) -> int:
    """The live server's model-host pid (its one child running ``loader.host``)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(server.proc.pid).children():
            if "loader.host" in " ".join(child.cmdline()):
                return int(child.pid)
        time.sleep(0.1)
    raise TimeoutError("no model host")


def test_the_web_process_never_maps_libtorch(live_server_factory: Any) -> None:
    server = live_server_factory().wait_warm()
    api = Api(server)
    assert api.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})[0] == 202
    assert api.wait_idle(timeout=120)["job"]["state"] == "succeeded"
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    assert "libtorch" not in maps and "transformers" not in maps
    assert "libtorch" in Path(f"/proc/{host_of(server)}/maps").read_text(), "the host holds the model"


def test_a_host_killed_mid_load_fails_the_job_and_one_killed_holding_a_model_is_reported(
    live_server_factory: Any,
) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="5").wait_warm()  # reads outlast a respawned host's imports
    api = Api(server)
    assert api.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})[0] == 202
    assert api.wait_idle(timeout=120)["job"]["state"] == "succeeded"
    os.kill(host_of(server), signal.SIGKILL)  # holding "tiny", no load running
    deadline = time.monotonic() + 30
    while (status := api.status())["lost"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status["loaded"] is None and status["lost"]["name"] == "tiny" and status["lost"]["signal"] == "SIGKILL"
    assert "SIGKILL" in status["lost"]["text"]["en"] and "tiny" in status["lost"]["text"]["ko"]

    assert api.call("POST", "/api/load", {"model": "medium", "device": "cpu"})[0] == 202
    api.wait_stage("weights", timeout=120)
    os.kill(host_of(server), signal.SIGKILL)
    job = api.wait_idle(timeout=60)["job"]
    assert job["state"] == "failed" and job["error"]["code"] == "host_died", job
    assert "SIGKILL" in job["error"]["text"]["ko"] and "SIGKILL" in job["error"]["text"]["en"]
    assert server.proc.poll() is None and api.call("GET", "/api/jobs")[0] == 200
    assert api.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})[0] == 202
    assert api.wait_idle(timeout=120)["job"]["state"] == "succeeded", "a fresh host serves the next load"
    assert [j["state"] for j in api.call("GET", "/api/jobs")[1]["jobs"]] == ["succeeded", "failed", "succeeded"]


@pytest.mark.django_db(transaction=True)
def test_a_cpu_hog_load_is_cancelled_by_its_host_while_the_server_answers(
    client: Client, settings: Any, test_host: Any
) -> None:
    test_host("hog")  # the real host, its check of "medium" stuck in a regex holding the GIL
    settings.MACTUNER_CANCEL_GRACE_S = 1.0
    deadline = time.monotonic() + 120
    while not MODEL_HOST.ready and time.monotonic() < deadline:  # its imports done: what burns next is the hog
        time.sleep(0.1)
    res = client.post("/api/load", data={"model": "medium", "device": "cpu"}, content_type="application/json")
    job_id = res.json()["job"]["id"]
    hog = MODEL_HOST.pid
    assert hog is not None
    while psutil.Process(hog).cpu_percent(0.5) < 50 and time.monotonic() < deadline:
        pass  # the host busy in the regex
    for _ in range(10):  # this process (the web side) answers while the host is stuck
        body = client.get("/api/status").json()
        assert body["job"]["id"] == job_id and body["job"]["active"]
    assert client.post("/api/cancel").status_code == 202
    job = wait_finished(job_id, timeout=60)
    assert job.state == "cancelled" and job.error_code == "host_recycled", (job.error_code, job.message)
    assert not psutil.pid_exists(hog) or psutil.Process(hog).status() == psutil.STATUS_ZOMBIE
    assert MODEL_HOST.pid != hog


def test_a_catastrophic_target_pattern_is_refused_in_the_preflight(live_server_factory: Any, hog_root: Path) -> None:
    server = live_server_factory(MACTUNER_MODELS_DIR=str(hog_root)).wait_warm()
    api = Api(server)
    assert api.call("POST", "/api/load", {"model": "regex-hog", "device": "cpu"})[0] == 202
    job = api.wait_idle(timeout=120)["job"]
    # The bounded matcher finds that the pattern targets none of the adapter's modules: a typed refusal,
    # in the preflight, before anything is unloaded (and peft never matches a pattern unbounded).
    assert job["state"] == "failed" and job["error"]["code"] == "adapter_mismatch", job
    assert api.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})[0] == 202
    assert api.wait_idle(timeout=120)["job"]["state"] == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_garbage_from_the_host_fails_the_job_as_internal_and_spawns_a_fresh_one(client: Client, test_host: Any) -> None:
    test_host("garbage")
    babbler = MODEL_HOST.pid
    res = client.post("/api/load", data={"model": "tiny"}, content_type="application/json")
    job = wait_finished(res.json()["job"]["id"], timeout=60)
    assert job.state == "failed" and job.error_code == "internal" and "not JSON" in job.error_detail
    assert MODEL_HOST.pid != babbler
    assert client.get("/api/status").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_host_that_floods_the_pipe_is_bounded(client: Client, test_host: Any) -> None:
    test_host("flood")
    me = psutil.Process()
    peak = [me.memory_info().rss]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak.append(me.memory_info().rss)

    threading.Thread(target=watch, daemon=True).start()
    before = peak[0]
    res = client.post("/api/load", data={"model": "tiny"}, content_type="application/json")
    job = wait_finished(res.json()["job"]["id"], timeout=120)
    done.set()
    assert job.state == "failed" and job.error_code == "shard_corrupt", (job.error_code, job.error_detail)
    # 200,000 frames of ~400 bytes (80 MB) went through; the unread ones were superseded, not kept.
    assert max(peak) - before < 40_000_000


@pytest.mark.django_db(transaction=True)
def test_unload_keeps_a_warm_host(client: Client) -> None:
    res = client.post("/api/load", data={"model": "tiny", "device": "cpu"}, content_type="application/json")
    assert wait_finished(res.json()["job"]["id"], timeout=120).state == "succeeded"
    host = MODEL_HOST.pid
    assert client.post("/api/unload").json()["unloaded"] is True
    assert MODEL_HOST.pid == host and MODEL_HOST.ready, "imports done, nothing to reload"
    assert client.get("/api/status").json()["loaded"] is None


def test_an_announced_huge_body_is_refused_at_once_from_its_header(live_server_factory: Any) -> None:
    """Content-Length: 99,999,999,999 with two bytes sent: 413 before the rest (which never comes)."""
    import socket

    server = live_server_factory()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            b"POST /api/load HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept-Language: en\r\nContent-Length: 99999999999\r\n\r\n{}"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)  # the socket's timeout, not a clock in the test, bounds the wait
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"Request body" in reply or b"too large" in reply.lower(), reply
    assert Api(server).call("GET", "/api/status")[0] == 200
