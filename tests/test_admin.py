"""The admin is a read-only job history with the filters and detail the issue asks for."""

from __future__ import annotations

import pytest
from django.test import Client

from loader.jobs import services
from loader.jobs.models import LoadJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_with_history(admin_client: Client) -> tuple[Client, LoadJob]:
    job = services.job_start(model_name="tiny", model_path="/m/tiny", device="cpu", dtype="auto", source="cli")
    services.job_fail(job=job, code="shard_corrupt", message="가중치 파일이 잘렸습니다", detail="truncated at 123")
    return admin_client, job


def test_history_list_filters_and_search(admin_client_with_history: tuple[Client, LoadJob]) -> None:
    client, _job = admin_client_with_history
    page = client.get("/admin/loader/loadjob/").content.decode()
    assert "tiny" in page and "failed" in page and "cli" in page
    for query in ("?state__exact=failed", "?source__exact=cli", "?device__exact=", "?q=tiny"):
        assert client.get("/admin/loader/loadjob/" + query).status_code == 200
    assert "tiny" not in client.get("/admin/loader/loadjob/?q=nothing-like-it").content.decode().split("<tbody>")[-1]


def test_detail_is_read_only_and_shows_the_error(admin_client_with_history: tuple[Client, LoadJob]) -> None:
    client, job = admin_client_with_history
    page = client.get(f"/admin/loader/loadjob/{job.pk}/change/").content.decode()
    assert "truncated at 123" in page and "가중치 파일이 잘렸습니다" in page
    assert 'name="_save"' not in page, "history must not be editable"
    assert client.get("/admin/loader/loadjob/add/").status_code == 403
    assert client.post(f"/admin/loader/loadjob/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LoadJob.objects.filter(pk=job.pk).exists()


def test_one_active_job_is_a_database_constraint() -> None:
    from django.db import IntegrityError, transaction

    LoadJob.objects.create(model_name="a", model_path="/a", state="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        LoadJob.objects.create(model_name="b", model_path="/b", state="queued")
    LoadJob.objects.create(model_name="c", model_path="/c", state="failed")  # history is unconstrained


def test_the_korean_admin_speaks_korean_and_shows_json_readably(
    admin_client_with_history: tuple[Client, LoadJob],
) -> None:
    client, job = admin_client_with_history
    LoadJob.objects.filter(pk=job.pk).update(metadata={"architecture": "LlamaForCausalLM", "notes": [{"text": "메모"}]})
    listing = client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "로드 작업" in listing and "load job" not in listing.lower().replace("loadjob", "")
    assert "결과" in listing and "시작한 곳" in listing  # the filters' titles
    detail = client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "세부 정보" in detail and "첫 토큰까지" in detail
    assert '<pre class="json">' in detail and '"architecture": "LlamaForCausalLM"' in detail.replace("&quot;", '"')
    assert "메모" in detail  # non-ASCII as itself, not \\uXXXX
