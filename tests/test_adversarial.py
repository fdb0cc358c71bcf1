"""Regressions from the adversarial pass: nested JSON, orphaned jobs without viewers, paused servers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from loader.jobs.local import HOSTNAME as HOST
from loader.jobs.models import LoadJob
from mactuner_dev.harness import Api, LiveServer

from .test_websocket import connect

NESTED = 2000  # 4 KB: far under the 16 KB body limit, deeper than json's recursion limit


@pytest.mark.django_db
def test_deeply_nested_json_body_is_400_and_starts_nothing(client: Client) -> None:
    for raw in ("[" * NESTED + "]" * NESTED, '{"model": ' + "[" * NESTED + "]" * NESTED + "}"):
        res = client.post("/api/load", data=raw, content_type="application/json")
        assert res.status_code == 400, res.status_code
        assert res.json()["error"]
    assert LoadJob.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_deeply_nested_websocket_frame_does_not_close_the_socket() -> None:
    async def body() -> None:
        comm = await connect()
        await comm.receive_json_from(timeout=5)
        await comm.send_to(text_data="[" * NESTED + "]" * NESTED)
        await comm.send_json_to({"type": "refresh"})
        again = await comm.receive_json_from(timeout=5)
        assert again["type"] == "snapshot"
        await comm.disconnect()

    async_to_sync(body)()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _insert_orphan(server: LiveServer, state: str, stage: str) -> int:
    """A job whose owner on this host is gone (a killed server, a CLI hit by Ctrl-C at job start)."""
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(server.env["MACTUNER_SQLITE_PATH"]) as db:
        columns = {row[1] for row in db.execute("pragma table_info(loader_loadjob)")}
        values: dict[str, Any] = {
            "model_name": "tiny", "model_path": "/nowhere/tiny", "device_requested": "auto", "dtype_requested": "auto",
            "source": "cli", "slot": "default", "requested_by": "", "lang": "ko", "state": state, "stage": stage, "percent": 0.0,
            "message": "준비 중...", "owner_host": HOST, "owner_pid": _dead_pid(), "created_at": now,
            "updated_at": now, "heartbeat_at": now, "progress_at": now, "cancel_requested": False,
            "detail": "{}", "timings": "{}", "metadata": "{}", "error_code": "", "error_message": "",
            "error_detail": "", "device": "", "dtype": "", "error_params": "{}", "merge": False,
        }  # fmt: skip
        values = {k: v for k, v in values.items() if k in columns}
        cur = db.execute(
            f"insert into loader_loadjob ({', '.join(values)}) values ({', '.join('?' * len(values))})",
            list(values.values()),
        )
        return int(cur.lastrowid or 0)


def test_job_of_a_dead_owner_ends_for_http_clients_without_a_websocket(live_server_factory: Any) -> None:
    """No browser open, only HTTP: the dead owner's job must not stay active (cancel 202, unload 409) forever."""
    server = live_server_factory()
    api = Api(server)
    job_id = _insert_orphan(server, "queued", "preparing")
    deadline = time.monotonic() + 30  # several agent heartbeats
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.status()["job"]  # type: ignore[assignment]
        if job and not job["active"]:
            break
        time.sleep(0.5)
    assert job["id"] == job_id
    assert job["state"] == "interrupted", json.dumps(job)[:300]
    assert api.call("POST", "/api/unload")[0] == 200


def test_model_of_a_paused_server_still_shows_after_it_resumes(live_server_factory: Any, tmp_path: Path) -> None:
    """A server paused past the heartbeat staleness (SIGSTOP, laptop sleep) keeps its model; once it
    beats again every server must show that model as loaded, not ``loaded: null``."""
    import os
    import signal

    a = live_server_factory()
    b = live_server_factory()
    api_a, api_b = Api(a), Api(b)
    assert api_a.call("POST", "/api/load", {"model": "tiny", "device": "cpu"})[0] == 202
    api_a.wait_idle()
    assert (api_b.status()["loaded"] or {}).get("name") == "tiny"  # type: ignore[union-attr]
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(22)  # past PROCESS_STALE_S plus B's expiry pass
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    time.sleep(8)  # A beats again
    for api in (api_a, api_b):
        assert (api.status()["loaded"] or {}).get("name") == "tiny", api.status()
