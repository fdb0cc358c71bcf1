"""History you can see: the job list endpoint, the ETA from earlier loads, the admin's stage chart
and labels, the favicon. Real loads through the HTTP API; the browser side is in test_browser."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from loader.jobs.history import expected_total_seconds
from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob

from .conftest import wait_finished

pytestmark = pytest.mark.django_db(transaction=True)
HANGUL = re.compile(r"[\uac00-\ud7a3]")


@pytest.fixture(autouse=True)
def _empty_slot() -> None:
    MODEL_HOST.unload()


def load(client: Client, model: str) -> LoadJob:
    res = client.post("/api/load", data=json.dumps({"model": model, "device": "cpu"}), content_type="application/json")
    assert res.status_code == 202, res.content
    return wait_finished(res.json()["job"]["id"])


def test_jobs_lists_newest_first_and_honours_limit(client: Client) -> None:
    first, second = load(client, "tied"), load(client, "tiny")
    jobs = client.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in jobs] == [second.pk, first.pk]
    assert jobs[0]["state"] == "succeeded" and jobs[0]["source"] == "web" and jobs[0]["timings"]["total"] > 0
    assert jobs[0]["detail"]["bytes_per_s"] > 0, "the history panel's read rate"
    assert [j["id"] for j in client.get("/api/jobs?limit=1").json()["jobs"]] == [second.pk]


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5", "", "²", "9" * 40])
def test_jobs_rejects_a_bad_limit_with_a_plain_message(client: Client, limit: str) -> None:
    res = client.get("/api/jobs", {"limit": limit})
    assert res.status_code == 400 and "limit" in res.json()["error"]


def test_expected_total_is_the_median_of_the_last_five_successes() -> None:
    totals = [9.0, 1.0, 2.0, 3.0, 4.0, 100.0]  # oldest first; 9.0 falls out of the last five
    for total in totals:
        LoadJob.objects.create(model_name="m", model_path="/m", state="succeeded", timings={"total": total})
    LoadJob.objects.create(model_name="m", model_path="/m", state="failed", timings={"total": 500.0})
    LoadJob.objects.create(model_name="other", model_path="/o", state="succeeded", timings={"total": 7.0})
    assert expected_total_seconds("m") == statistics.median(totals[1:]) == 3.0
    assert expected_total_seconds("never-loaded") is None


def test_a_running_job_carries_the_eta_of_its_earlier_loads(client: Client) -> None:
    earlier = [load(client, "tiny").timings["total"] for _ in range(2)]
    res = client.post("/api/load", data=json.dumps({"model": "tiny"}), content_type="application/json")
    job = res.json()["job"]
    assert job["active"] and job["expected_total_s"] == pytest.approx(statistics.median(earlier), abs=1e-3)
    wait_finished(job["id"])
    res = client.post("/api/load", data=json.dumps({"model": "tied"}), content_type="application/json")
    assert res.json()["job"]["expected_total_s"] is None, "no earlier load of this model: no guess"
    wait_finished(res.json()["job"]["id"])


def test_admin_job_page_shows_the_stage_chart_in_the_pages_words(admin_client: Client) -> None:
    job = load(admin_client, "tiny")
    page = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    chart = page.split('class="stage-chart"')[1].split("</ul>")[0]
    for stage in ("preparing", "tokenizer", "config", "weights", "device", "metadata"):
        assert f'data-stage="{stage}"' in chart
    assert "가중치" in chart and "토크나이저" in chart and "loader/chart.css" in page
    assert '"preparing":' not in page, "timings are a chart, not raw JSON"
    widths = [float(w) for w in re.findall(r'width="([\d.]+)%"', chart)]  # SVG attributes: the CSP bars style="…"
    assert len(widths) == 6 and sum(widths) == pytest.approx(100, abs=0.1)
    english = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    chart_en = english.split('class="stage-chart"')[1].split("</ul>")[0]
    assert "Weights" in chart_en and not HANGUL.search(chart_en)


def test_admin_list_uses_the_pages_labels(admin_client: Client) -> None:
    LoadJob.objects.create(model_name="org/name", model_path="/x", state="failed", source="cli", stage="weights")
    ko = admin_client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    rows = ko.split("<tbody>")[1]
    assert "org/name" in rows and "실패" in rows and "CLI" in rows and "가중치" in rows
    en = admin_client.get("/admin/loader/loadjob/", HTTP_ACCEPT_LANGUAGE="en").content.decode().split("<tbody>")[1]
    assert "Failed" in en and "Weights" in en and not HANGUL.search(en)


def test_page_links_an_svg_favicon_and_the_history_panel(client: Client) -> None:
    html = client.get("/").content.decode()
    href = re.search(r'<link rel="icon" type="image/svg\+xml" href="/static/([^"]+)"', html)
    assert href and "<svg" in open(finders.find(href.group(1)), encoding="utf-8").read()  # noqa: SIM115
    assert 'id="history-body"' in html
