"""The HTTP contract: validation, 202/409/400, CSRF, and a real background load to the end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob

from .conftest import wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body or {})
    res = client.post(path, data=data, content_type="application/json")
    return res.status_code, res.json()


@pytest.fixture(autouse=True)
def _empty_slot() -> None:
    MODEL_HOST.unload()


def test_models_lists_generated_checkpoints(client: Client) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert {"tiny", "tied", "medium"} <= set(models)
    assert models["tiny"]["shards"] == 3 and models["tiny"]["architecture"] == "LlamaForCausalLM"
    assert models["tiny"]["size_bytes"] > 1_000_000


def test_load_runs_in_background_and_status_shows_the_loaded_model(client: Client) -> None:
    status, body = post(client, "/api/load", {"model": "tiny", "device": "cpu", "dtype": "auto"})
    assert status == 202
    job = body["job"]
    assert job["state"] in {"queued", "running"} and job["model"] == "tiny" and job["source"] == "web"
    assert set(job["detail"]) >= {"shard", "shards", "bytes_done", "bytes_total", "bytes_per_s", "eta_s"}
    done = wait_finished(job["id"])
    assert done.state == "succeeded" and done.percent == 100 and done.stage == "done"
    assert done.metadata["architecture"] == "LlamaForCausalLM" and done.timings["total"] > 0
    state = client.get("/api/status").json()
    assert state["job"]["state"] == "succeeded"
    assert state["loaded"]["name"] == "tiny" and state["loaded"]["metadata"]["layers"] >= 2
    assert client.post("/api/unload").status_code == 200
    assert client.get("/api/status").json()["loaded"] is None


def test_second_load_while_one_is_active_is_409(client: Client) -> None:
    status, first = post(client, "/api/load", {"model": "medium"})
    assert status == 202
    status, second = post(client, "/api/load", {"model": "tiny"})
    assert status == 409 and "로드하는 중" in second["error"]
    assert second["job"]["id"] == first["job"]["id"]
    assert client.post("/api/unload").status_code == 409
    wait_finished(first["job"]["id"])
    assert LoadJob.objects.count() == 1


def test_cancel_without_a_running_job_is_409(client: Client) -> None:
    status, body = post(client, "/api/cancel")
    assert status == 409 and body["error"]


def test_cancel_stops_a_running_load(client: Client, settings: object) -> None:
    settings.MACTUNER_READ_LIMIT_MBPS = 20  # type: ignore[attr-defined]
    _, body = post(client, "/api/load", {"model": "medium"})
    deadline = time.monotonic() + 30
    while LoadJob.objects.get(pk=body["job"]["id"]).stage != "weights" and time.monotonic() < deadline:
        time.sleep(0.05)
    status, cancelled = post(client, "/api/cancel")
    assert status == 202 and cancelled["job"]["cancel_requested"] is True
    t0 = time.monotonic()
    job = wait_finished(body["job"]["id"])
    assert job.state == "cancelled" and time.monotonic() - t0 < 2.0
    assert MODEL_HOST.model is None
    status, again = post(client, "/api/load", {"model": "tiny"})
    assert status == 202 and wait_finished(again["job"]["id"]).state == "succeeded"


@pytest.mark.parametrize(
    ("body", "raw"),
    [
        ({"model": "no-such-model"}, None),
        ({"model": "../tiny"}, None),
        ({"model": "/etc"}, None),
        ({"model": ""}, None),
        ({"model": 5}, None),
        ({"model": ["tiny"]}, None),
        ({"model": "tiny", "device": "tpu"}, None),
        ({"model": "tiny", "device": 1}, None),
        ({"model": "tiny", "dtype": "int4"}, None),
        (None, b"not json"),
        (None, b"[1, 2]"),
        (None, b"\xff\xfe"),
    ],
)
def test_bad_load_requests_are_400_and_start_nothing(client: Client, body: object, raw: bytes | None) -> None:
    status, answer = post(client, "/api/load", body, raw)
    assert status == 400 and answer["error"]
    assert LoadJob.objects.count() == 0


def test_oversized_body_is_413(client: Client) -> None:
    status = client.post(
        "/api/load", data=json.dumps({"model": "x" * 100_000}), content_type="application/json"
    ).status_code
    assert status == 413


def test_symlink_escaping_models_root_is_not_offered(client: Client, models_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside).mkdir()
    (outside / "config.json").write_text("{}")
    link = models_root / "escape"
    link.symlink_to(outside)
    try:
        names = [m["name"] for m in client.get("/api/models").json()["models"]]
        assert "escape" not in names
        assert post(client, "/api/load", {"model": "escape"})[0] == 400
    finally:
        link.unlink()


def test_state_changing_endpoints_enforce_csrf() -> None:
    csrf_client = Client(enforce_csrf_checks=True)
    for path in ("/api/load", "/api/cancel", "/api/unload"):
        res = csrf_client.post(path, data=json.dumps({"model": "tiny"}), content_type="application/json")
        assert res.status_code == 403, path
        assert "X-CSRFToken" in res.json()["error"]
    page = csrf_client.get("/")
    token = page.cookies["csrftoken"].value
    res = csrf_client.post("/api/cancel", data="{}", content_type="application/json", headers={"X-CSRFToken": token})
    assert res.status_code == 409  # past CSRF: nothing to cancel


def test_page_renders_korean_settings_panel_with_initial_state(client: Client) -> None:
    html = client.get("/").content.decode()
    assert "🤖 모델 선택" in html and "모델 로드" in html and 'id="initial-state"' in html


def test_page_speaks_english_when_the_browser_asks(client: Client) -> None:
    html = client.get("/", headers={"Accept-Language": "en"}).content.decode()
    assert "Load model" in html and "Choose a model" in html


def test_hf_cache_snapshots_and_org_folders_are_offered(
    client: Client, settings: object, models_root: Path, tmp_path: Path
) -> None:
    import shutil

    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-chat" / "snapshots" / "abc123"
    shutil.copytree(models_root / "tiny", snapshot)
    (cache / "models--acme--tiny-chat" / "refs").mkdir()
    (cache / "models--acme--tiny-chat" / "refs" / "main").write_text("abc123")
    (cache / "models--broken--empty" / "snapshots").mkdir(parents=True)  # no snapshot: listed with why
    settings.MACTUNER_HF_CACHE = cache  # type: ignore[attr-defined]
    org = models_root / "zz-org"
    shutil.copytree(models_root / "tied", org / "tied-v2")
    try:
        names = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert names["acme/tiny-chat"]["source"] == "hf-cache" and names["acme/tiny-chat"]["shards"] == 3
        assert "zz-org/tied-v2" in names and names["broken/empty"]["problem"]
        status, body = post(client, "/api/load", {"model": "acme/tiny-chat"})
        assert status == 202 and wait_finished(body["job"]["id"]).state == "succeeded"
    finally:
        shutil.rmtree(org)
