"""Races against a live server: many loads at once, web against CLI, cancel/unload against loads."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .conftest import PYTHON, ROOT, Api, db_rows


def test_fifty_concurrent_loads_start_exactly_one_job(live_server_factory: Any) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="100")
    api = Api(server)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: api.call("POST", "/api/load", {"model": "medium"}), range(50)))
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(202) == 1 and statuses.count(409) == 49, statuses
    assert all("로드하는 중" in body["error"] for status, body in answers if status == 409)
    assert api.wait_idle()["job"]["state"] == "succeeded"
    assert len(db_rows(server)) == 1
    log = open(server.log.name, encoding="utf-8", errors="replace").read()  # noqa: SIM115
    assert "Traceback" not in log and '" 500 ' not in log


def test_web_and_cli_racing_start_exactly_one_job(live_server_factory: Any) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="100")
    api = Api(server)
    cli = subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", "tiny"],
        cwd=ROOT,
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outcomes: list[int] = []
    deadline = time.monotonic() + 30
    while cli.poll() is None and time.monotonic() < deadline:  # keep trying while the CLI runs
        status, _ = api.call("POST", "/api/load", {"model": "medium"})
        outcomes.append(status)
        if status == 202:
            break
        time.sleep(0.02)
    cli.communicate(timeout=60)
    api.wait_idle()
    rows = db_rows(server)
    assert set(outcomes) <= {202, 409}
    started = [r for r in rows if r["state"] == "succeeded"]
    if cli.returncode == 2:  # the web won the slot
        assert 202 in outcomes and [r["source"] for r in rows] == ["web"]
    else:
        assert cli.returncode == 0 and "cli" in {r["source"] for r in started}
    assert all(r["state"] in {"succeeded", "cancelled", "failed"} for r in rows)
    assert sum(1 for r in rows if r["state"] in {"queued", "running"}) == 0


def test_cancel_racing_completion_and_double_cancel_end_in_a_valid_state(live_server_factory: Any) -> None:
    server = live_server_factory()
    api = Api(server)
    for _ in range(3):
        assert api.call("POST", "/api/load", {"model": "tiny"})[0] == 202
        first = api.call("POST", "/api/cancel")[0]
        second = api.call("POST", "/api/cancel")[0]
        assert first in {202, 409} and second in {202, 409}
        state = api.wait_idle()
        job = state["job"]
        assert job["state"] in {"cancelled", "succeeded"}
        if job["state"] == "succeeded":
            assert state["loaded"] and state["loaded"]["name"] == "tiny"
        else:
            assert state["loaded"] is None
    assert api.call("POST", "/api/load", {"model": "tied"})[0] == 202
    assert api.wait_idle()["job"]["state"] == "succeeded"


def test_unload_racing_load_is_refused_or_clean(live_server_factory: Any) -> None:
    server = live_server_factory(MACTUNER_READ_LIMIT_MBPS="100")
    api = Api(server)
    assert api.call("POST", "/api/load", {"model": "medium"})[0] == 202
    assert api.call("POST", "/api/unload")[0] == 409
    state = api.wait_idle()
    assert state["job"]["state"] == "succeeded" and state["loaded"]["name"] == "medium"
    status, body = api.call("POST", "/api/unload")
    assert status == 200 and body["unloaded"] is True
    assert api.status()["loaded"] is None
