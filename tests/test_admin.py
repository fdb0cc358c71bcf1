"""The admin is a read-only job history with the filters and detail the issue asks for."""

from __future__ import annotations

import re

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


def test_a_jobs_message_is_said_in_the_viewers_language_not_the_requesters(admin_client: Client) -> None:
    """A load asked for in Korean reads "✅ Model loaded!" on the English admin, and back."""
    job = services.job_start(model_name="tiny", model_path="/m/tiny", device="cpu", dtype="auto", source="web")
    event = {"message": "✅ 모델 로드 완료!", "detail": {}, "timings": {"weights": 1.0, "total": 1.0}}
    services.job_succeed(job=job, device="cpu", dtype="float32", metadata={}, event=event)
    english = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "✅ Model loaded!" in english and "모델 로드 완료" not in english
    LoadJob.objects.filter(pk=job.pk).update(lang="en", message="✅ Model loaded!")
    korean = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "✅ 모델 로드 완료!" in korean and "Model loaded" not in korean


def test_stored_messages_are_reworded_with_their_parameters_and_failures_from_their_error() -> None:
    from loader.jobs.selectors import job_message, job_snapshot

    job = services.job_start(
        model_name="tiny", model_path="/m/tiny", device="cpu", dtype="auto", source="web", lang="en"
    )
    for stored, korean in (
        ("Moving model to mps...", "모델을 mps(으)로 이동 중..."),
        ("Preparing: importing libraries (torch)...", "준비 중: 라이브러리 불러오는 중 (torch)..."),
        ("a message no release said", "a message no release said"),
    ):
        job.message = stored
        assert job_message(job, "ko") == korean and job_message(job, "en") == stored
    services.job_mark_cancelled(job=job, dropped="big")
    assert "big" in job_message(job, "ko") and "언로드" in job_message(job, "ko")
    assert job_message(job, "en").startswith("Load cancelled. The previous model big")
    failed = services.job_start(model_name="x", model_path="/m/x", device="cpu", dtype="auto", source="web", lang="en")
    services.job_fail(job=failed, code="shard_corrupt", message="가중치 파일이 잘렸습니다", detail="")
    snapshot = job_snapshot(failed)
    assert snapshot is not None and snapshot["message_text"]["ko"] == "❌ 오류: 가중치 파일이 잘렸습니다"
    assert snapshot["message_text"]["en"].startswith("❌ Error: ")


def test_the_english_admin_counts_load_jobs_and_names_the_app_in_its_language(admin_client: Client) -> None:
    for name in ("a", "b"):
        LoadJob.objects.create(model_name=name, model_path="/" + name, state="failed")
    english = admin_client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "2 load jobs" in english and "2 load job\n" not in english
    assert "Model loader" in english
    korean = admin_client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "2 로드 작업" in korean and "모델 로더" in korean and "Model loader" not in korean


def test_the_list_filters_show_the_pages_labels_not_raw_values(admin_client: Client) -> None:
    LoadJob.objects.create(model_name="a", model_path="/a", state="failed", source="cli")
    for lang, words, raw in (("ko", ("실패", "성공", "대기 중", "웹", "CLI"), (">failed<", ">web<", ">cli<")),
                             ("en", ("Failed", "Succeeded", "Queued", "Web", "CLI"), (">failed<", ">web<", ">cli<"))):  # fmt: skip
        page = admin_client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE=lang).content.decode()
        filters = page.split('id="changelist-filter"')[1].split("</nav>")[0]
        links = re.sub(r"\s+", " ", re.sub(r"<a [^>]*>", "<a>", filters))
        for word in words:
            assert f"<a>{word}</a>" in links, (lang, word)
        for value in raw:
            assert value not in links.replace("<a>", ">").replace("</a>", "<"), (lang, value)


def test_the_job_page_labels_its_two_totals_for_what_they_count(admin_client: Client) -> None:
    job = services.job_start(model_name="tiny", model_path="/m/tiny", device="cpu", dtype="auto", source="web")
    timings = {"preparing": 0.5, "weights": 2.0, "total": 2.6}
    event = {"message": "✅ 모델 로드 완료!", "detail": {}, "timings": timings}
    services.job_succeed(job=job, device="cpu", dtype="float32", metadata={}, event=event)
    english = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Sum of stages: 2.50s" in english, "the chart's figure is the sum of its bars"
    assert "Total time (click to end)" in english
    korean = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "단계 합계: 2.50s" in korean and "총 시간(클릭부터 끝까지)" in korean


def test_the_device_filter_names_jobs_that_never_got_a_device(admin_client: Client) -> None:
    LoadJob.objects.create(model_name="a", model_path="/a", state="failed", source="web", device="")
    LoadJob.objects.create(model_name="b", model_path="/b", state="succeeded", source="web", device="cpu")
    page = admin_client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    filters = re.sub(r"\s+", " ", page.split('id="changelist-filter"')[1].split("</nav>")[0])
    assert "<a></a>" not in re.sub(r"<a [^>]*>", "<a>", filters), "no empty link"
    assert "Not chosen yet" in filters and ">cpu<" in filters
    listed = admin_client.get("/admin/loader/loadjob/?device=-", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "/admin/loader/loadjob/" in listed and "1 load job" in listed
