"""Job state changes only through guarded transitions; refusals write nothing; one message shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs import services
from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob
from loader.jobs.selectors import job_snapshot, loader_state

from .conftest import wait_finished

pytestmark = pytest.mark.django_db(transaction=True)
EVENT = {"stage": "weights", "percent": 50.0, "message": "m", "detail": {}, "timings": {}}


@pytest.fixture(autouse=True)
def _empty_slot() -> None:
    MODEL_HOST.unload()


def _job(state: str = "queued") -> LoadJob:
    job = services.job_start(model_name="tiny", model_path="/m/tiny", device="cpu", dtype="auto", source="cli")
    if state != "queued":
        LoadJob.objects.filter(pk=job.pk).update(state=state)
        job.refresh_from_db()
    return job


def post(client: Client, path: str, body: object = None) -> Any:
    return client.post(path, data=json.dumps(body or {}), content_type="application/json")


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled", "interrupted"])
def test_a_finished_job_cannot_be_moved_again(final: str) -> None:
    job = _job(final)
    stale = LoadJob.objects.get(pk=job.pk)
    stale.state = "running"  # an owner holding an old copy of the row must not win
    assert services.job_succeed(job=stale, device="cpu", dtype="bfloat16", metadata={}, event=EVENT) is False
    assert services.job_fail(job=stale, code="x", message="x", detail="x") is False
    assert services.job_mark_cancelled(job=stale) is False
    assert services.job_progress(job=stale, event=EVENT) is False
    assert services.job_cancel(job=stale) is False
    assert LoadJob.objects.get(pk=job.pk).state == final


def test_a_reaped_job_is_never_flipped_back_to_succeeded() -> None:
    job = _job("running")
    LoadJob.objects.filter(pk=job.pk).update(owner_pid=2**22 + 12345)  # a pid that is not running
    assert services.job_reap() == [job.pk]
    assert services.job_succeed(job=job, device="cpu", dtype="bfloat16", metadata={}, event=EVENT) is False
    assert LoadJob.objects.get(pk=job.pk).state == "interrupted"


def test_first_progress_moves_queued_to_running_and_later_ones_keep_it() -> None:
    job = _job()
    assert services.job_progress(job=job, event=EVENT) is True
    row = LoadJob.objects.get(pk=job.pk)
    assert row.state == "running" and row.started_at is not None and row.percent == 50.0
    assert services.job_progress(job=job, event=EVENT | {"percent": 60.0}) is True
    assert LoadJob.objects.get(pk=job.pk).percent == 60.0
    assert services.job_succeed(job=job, device="cpu", dtype="bfloat16", metadata={}, event=EVENT) is True
    assert LoadJob.objects.get(pk=job.pk).state == "succeeded"


def test_a_refused_load_answers_409_and_writes_nothing(client: Client) -> None:
    active = _job("running")
    before = LoadJob.objects.count()
    res = post(client, "/api/load", {"model": "tiny"})
    assert res.status_code == 409 and "tiny" in res.json()["error"]
    assert res.json()["job"]["id"] == active.pk
    assert LoadJob.objects.count() == before, "a refusal must not become a history row"
    services.job_fail(job=active, code="x", message="x", detail="x")


def test_a_load_refused_while_our_slot_is_still_freeing_writes_nothing(client: Client) -> None:
    before = LoadJob.objects.count()
    assert MODEL_HOST._load_lock.acquire(blocking=False)
    try:
        res = post(client, "/api/load", {"model": "tiny"})
    finally:
        MODEL_HOST._load_lock.release()
    assert res.status_code == 409 and "정리" in res.json()["error"]
    assert LoadJob.objects.count() == before


def test_cancel_of_nothing_and_unload_during_a_load_are_refused(client: Client) -> None:
    assert post(client, "/api/cancel").status_code == 409
    job = _job("running")
    assert post(client, "/api/unload").status_code == 409
    services.job_fail(job=job, code="x", message="x", detail="x")


def test_jobs_endpoint_lists_newest_first_in_the_snapshot_shape(client: Client) -> None:
    ids = []
    for _ in range(3):
        job = _job()
        services.job_fail(job=job, code="x", message="boom", detail="d")
        ids.append(job.pk)
    body = client.get("/api/jobs?limit=2").json()
    assert [j["id"] for j in body["jobs"]] == ids[::-1][:2]
    assert body["jobs"][0] == json.loads(json.dumps(job_snapshot(LoadJob.objects.get(pk=ids[-1]))))
    assert set(body["jobs"][0]) == set(client.get("/api/status").json()["job"])
    for bad in ("0", "101", "x", "-1", "2.5", "1_0", "+7", " 5", "٣", "５"):
        res = client.get("/api/jobs", {"limit": bad})
        assert res.status_code == 400 and "limit" in res.json()["error"], bad
    assert client.get("/api/jobs?limit=abc&limit=5").status_code == 400, "a repeated limit is ambiguous"
    assert len(client.get("/api/jobs").json()["jobs"]) == 3


def test_the_loaded_name_is_the_catalog_name(client: Client, settings: Any, models_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(models_root / "tiny", root / "run" / "checkpoint-500")
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-chat" / "snapshots" / "0123abcd"
    shutil.copytree(models_root / "tied", snapshot)
    (cache / "models--acme--tiny-chat" / "refs").mkdir()
    (cache / "models--acme--tiny-chat" / "refs" / "main").write_text("0123abcd")
    settings.MACTUNER_MODELS_DIR, settings.MACTUNER_HF_CACHE = root, cache
    for name in ("run/checkpoint-500", "acme/tiny-chat"):
        res = post(client, "/api/load", {"model": name, "device": "cpu"})
        assert res.status_code == 202, res.json()
        assert wait_finished(res.json()["job"]["id"]).state == "succeeded"
        state = client.get("/api/status").json()
        assert state["loaded"]["name"] == name and state["job"]["model"] == name
    assert loader_state()["loaded"]["name"] == "acme/tiny-chat"
    assert post(client, "/api/unload").json() == {"unloaded": True, "loaded": None}
    assert client.get("/api/status").json()["loaded"] is None


def test_progress_after_an_unsaved_first_write_still_moves_the_row_to_running() -> None:
    job = _job()
    job.state = "running"  # our copy moved on while the database could not be written
    assert services.job_progress(job=job, event=EVENT) is True
    row = LoadJob.objects.get(pk=job.pk)
    assert row.state == "running" and row.percent == 50.0 and row.started_at is not None


def test_a_very_long_error_message_is_kept_whole_in_the_error_and_cut_in_the_status_line() -> None:
    job = _job("running")
    long = "가" * 2000
    assert services.job_fail(job=job, code="x", message=long, detail="d") is True
    row = LoadJob.objects.get(pk=job.pk)
    assert row.state == "failed" and row.error_message == long and len(row.message) <= 500
