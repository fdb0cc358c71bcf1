"""A load that cannot stop never wedges the slot; a full disk never loses a live owner's outcome."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.models import LoadJob
from loader.pipeline import slot as slot_module
from loader.process import MODEL_HOST

from .conftest import Api, LiveServer, db_rows, migrate, server_env, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, path: str, body: object = None) -> Any:
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def dead_share(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The preflight's first read blocks like a read from a dead network share, until released."""
    release = threading.Event()
    real = slot_module.preflight

    def blocked(request: Any, **kwargs: Any) -> Any:
        if request.path.name == "medium":
            release.wait(120)
        return real(request, **kwargs)

    monkeypatch.setattr(slot_module, "preflight", blocked)
    yield release
    release.set()


def _wait(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise TimeoutError


def test_a_blocked_read_is_flagged_stalled_while_still_preparing(
    client: Client, settings: Any, dead_share: Any
) -> None:
    settings.MACTUNER_STALL_SECONDS = 0.3
    job_id = post(client, "/api/load", {"model": "medium"}).json()["job"]["id"]
    snap = _wait(lambda: (j := client.get("/api/status").json()["job"])["stalled"] and j)
    assert snap["id"] == job_id and snap["state"] in ("queued", "running") and snap["stage"] == "preparing"
    dead_share.set()
    assert wait_finished(job_id).state == "succeeded"
    MODEL_HOST.unload()


def test_a_cancelled_load_that_cannot_stop_is_abandoned_and_the_next_load_works(
    client: Client, settings: Any, dead_share: Any
) -> None:
    settings.MACTUNER_ABANDON_AFTER_S = 0.5
    job_id = post(client, "/api/load", {"model": "medium"}).json()["job"]["id"]
    time.sleep(0.3)
    assert post(client, "/api/cancel").status_code == 202
    stuck = wait_finished(job_id, timeout=15)
    assert stuck.state == "cancelled" and stuck.error_code == "abandoned"
    assert "포기" in stuck.error_message and "MB" in stuck.error_message
    assert not MODEL_HOST.busy, "the slot is free for the next load"
    res = post(client, "/api/load", {"model": "tiny"})
    assert res.status_code == 202
    assert wait_finished(res.json()["job"]["id"]).state == "succeeded"
    dead_share.set()  # the stuck read returns at last: its model must not replace the new one
    time.sleep(1.0)
    assert MODEL_HOST.model is not None and MODEL_HOST.model["name"] == "tiny"
    assert LoadJob.objects.get(pk=job_id).state == "cancelled"
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


def test_a_cancel_while_checking_keeps_the_loaded_model(client: Client, settings: Any, dead_share: Any) -> None:
    settings.MACTUNER_ABANDON_AFTER_S = 30
    first = post(client, "/api/load", {"model": "tiny"}).json()["job"]["id"]
    assert wait_finished(first).state == "succeeded"
    job_id = post(client, "/api/load", {"model": "medium"}).json()["job"]["id"]
    time.sleep(0.3)
    assert post(client, "/api/cancel").status_code == 202
    dead_share.set()  # the blocked check returns; the cancel is seen before anything is unloaded
    assert wait_finished(job_id, timeout=20).state == "cancelled"
    assert MODEL_HOST.model is not None and MODEL_HOST.model["name"] == "tiny"
    assert client.get("/api/status").json()["loaded"]["name"] == "tiny"
    MODEL_HOST.unload()
