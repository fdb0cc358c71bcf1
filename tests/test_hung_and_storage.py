"""A load that cannot stop costs its host, never the server; a full disk never loses a live owner's outcome."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob

from .conftest import Api, LiveServer, db_rows, migrate, server_env, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, path: str, body: object = None) -> Any:
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


def _wait(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise TimeoutError


def test_a_blocked_read_is_flagged_stalled_while_still_preparing(client: Client, settings: Any, test_host: Any) -> None:
    release = test_host("blocking")
    settings.MACTUNER_STALL_SECONDS = 0.3
    job_id = post(client, "/api/load", {"model": "medium"}).json()["job"]["id"]
    snap = _wait(lambda: (j := client.get("/api/status").json()["job"])["stalled"] and j, timeout=60)
    assert snap["id"] == job_id and snap["state"] in ("queued", "running") and snap["stage"] == "preparing"
    release.touch()
    assert wait_finished(job_id).state == "succeeded"
    MODEL_HOST.unload()


def test_a_cancelled_load_that_cannot_stop_costs_its_host_and_the_next_load_works(
    client: Client, settings: Any, test_host: Any
) -> None:
    test_host("blocking")  # never released: the check of "medium" waits forever
    settings.MACTUNER_CANCEL_GRACE_S = 0.5
    first = post(client, "/api/load", {"model": "tiny"}).json()["job"]["id"]
    assert wait_finished(first, timeout=90).state == "succeeded"
    stuck_host = MODEL_HOST.pid
    job_id = post(client, "/api/load", {"model": "medium"}).json()["job"]["id"]
    _wait(lambda: LoadJob.objects.get(pk=job_id).state == "running", timeout=60)
    assert post(client, "/api/cancel").status_code == 202
    stuck = wait_finished(job_id, timeout=15)
    assert stuck.state == "cancelled" and stuck.error_code == "host_recycled", (stuck.error_code, stuck.message)
    assert "메모리" in stuck.error_message
    assert not MODEL_HOST.busy and MODEL_HOST.pid != stuck_host, "a fresh host serves the next load"
    status = client.get("/api/status").json()
    assert status["loaded"] is None and status["lost"]["name"] == "tiny", "the dropped model is named"
    res = post(client, "/api/load", {"model": "tiny"})
    assert res.status_code == 202
    assert wait_finished(res.json()["job"]["id"], timeout=90).state == "succeeded"
    assert client.get("/api/status").json()["lost"] is None
    MODEL_HOST.unload()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    mount = tmp_path / "tinyfs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode(errors='replace').strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_a_load_keeps_the_outcome_and_never_blames_a_live_owner(
    models_root: Path, tiny_disk: Path
) -> None:
    env = server_env(models_root, tiny_disk / "jobs.sqlite3", MACTUNER_READ_LIMIT_MBPS="40")
    migrate(env)
    server = LiveServer(env).start().wait_warm()
    try:
        api = Api(server)
        status, body = api.call("POST", "/api/load", {"model": "medium", "device": "cpu"})
        assert status == 202
        api.wait_stage("weights", timeout=30)
        filler = tiny_disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        time.sleep(4)  # the load goes on while nothing can be written
        assert server.proc and server.proc.poll() is None
        filler.unlink()
        state = api.wait_idle(timeout=60)
        assert state["job"]["state"] == "succeeded", state["job"]
        row = next(r for r in db_rows(server) if r["id"] == body["job"]["id"])
        assert row["state"] == "succeeded" and row["error_code"] == ""
        assert "gone" not in (row["error_detail"] or "")
    finally:
        server.stop()
        shutil.rmtree(tiny_disk, ignore_errors=True)


def test_a_cancel_while_checking_keeps_the_loaded_model(client: Client, settings: Any, test_host: Any) -> None:
    release = test_host("blocking")
    settings.MACTUNER_CANCEL_GRACE_S = 2.0
    first = post(client, "/api/load", {"model": "tiny"}).json()["job"]["id"]
    assert wait_finished(first, timeout=90).state == "succeeded"
    host = MODEL_HOST.pid
    job_id = post(client, "/api/load", {"model": "medium"}).json()["job"]["id"]
    _wait(lambda: LoadJob.objects.get(pk=job_id).state == "running", timeout=60)
    assert post(client, "/api/cancel").status_code == 202
    release.touch()  # the blocked check returns within the grace; the cancel is seen before any unload
    assert wait_finished(job_id, timeout=20).state == "cancelled"
    assert MODEL_HOST.pid == host, "a load that stops in time keeps its host"
    assert MODEL_HOST.model is not None and MODEL_HOST.model["name"] == "tiny"
    assert client.get("/api/status").json()["loaded"]["name"] == "tiny"
    MODEL_HOST.unload()
