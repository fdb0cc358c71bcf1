"""The progress writer: what a success's outcome supersedes is dropped, everything else is written."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from loader import progress_sink, services
from loader.models import LoadJob
from loader.pipeline.events import ProgressEvent, Stage

pytestmark = pytest.mark.django_db(transaction=True)


def blocked_sink(
    monkeypatch: pytest.MonkeyPatch, published: list[str]
) -> tuple[progress_sink.ProgressSink, threading.Event, list[str]]:
    """A sink whose first row write waits for ``release``; ``written`` lists the stages written."""
    monkeypatch.setattr(
        progress_sink.publisher, "send", lambda state, force=True: published.append(state["job"]["stage"])
    )
    job = services.job_start(model_name="m", model_path="/m", device="cpu", dtype="auto", source="web")
    entered, release, written = threading.Event(), threading.Event(), []
    real = services.job_progress

    def slow(*, job: LoadJob, event: dict[str, Any]) -> bool:
        entered.set()
        release.wait(10)
        written.append(event["stage"])
        return real(job=job, event=event)

    monkeypatch.setattr(progress_sink.services, "job_progress", slow)
    sink = progress_sink.ProgressSink(job)
    sink.offer(ProgressEvent(Stage.WEIGHTS, 60.0, "w"), True)
    assert entered.wait(5)  # the write under way
    for stage, percent in ((Stage.DEVICE, 88.0), (Stage.METADATA, 92.0), (Stage.DONE, 100.0)):
        sink.offer(ProgressEvent(stage, percent, stage.value), True)
    return sink, release, written


@pytest.mark.parametrize(
    ("superseded", "expected", "shown"),
    [
        (True, ["weights"], ["weights", "device", "metadata"]),  # "done": the outcome's snapshot says it
        (False, ["weights", "done"], ["weights", "device", "metadata", "done"]),
    ],
)
def test_a_success_writes_no_more_rows_but_waits_for_the_write_under_way(
    monkeypatch: pytest.MonkeyPatch, superseded: bool, expected: list[str], shown: list[str]
) -> None:
    published: list[str] = []
    sink, release, written = blocked_sink(monkeypatch, published)
    drained = threading.Event()
    threading.Thread(target=lambda: (sink.drain(superseded=superseded), drained.set()), daemon=True).start()
    assert not drained.wait(0.2), "drain must wait for the write under way"
    release.set()
    assert drained.wait(5)
    assert written == expected  # queued stage changes: one row write (the newest), unless superseded
    assert published[published.index("weights") :] == shown  # every stage change reaches the viewers
    sink.close()


def test_stage_changes_are_published_at_once_and_their_rows_written_once_per_linger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fast load's stage changes (tokenizer, config, weights within a few ms) each reach the
    viewers at once (as "running"), but the row — which keeps only the newest — is written once."""
    job = services.job_start(model_name="m", model_path="/m", device="cpu", dtype="auto", source="web")
    monkeypatch.setattr(progress_sink, "LINGER_S", 5.0)  # longer than this test: nothing ends it but drain()
    written: list[str] = []
    published: list[dict[str, Any]] = []
    real = services.job_progress

    def counted(*, job: LoadJob, event: dict[str, Any]) -> bool:
        written.append(event["stage"])
        return real(job=job, event=event)

    monkeypatch.setattr(progress_sink.services, "job_progress", counted)
    monkeypatch.setattr(progress_sink.publisher, "send", lambda state, force=True: published.append(state["job"]))
    sink = progress_sink.ProgressSink(job)
    stages = [(Stage.TOKENIZER, 30.0), (Stage.CONFIG, 40.0), (Stage.WEIGHTS, 41.0), (Stage.DEVICE, 86.0)]
    for stage, percent in stages:
        sink.offer(ProgressEvent(stage, percent, stage.value), True)
        for _ in range(200):  # each handled before the next comes
            if published and published[-1]["stage"] == stage.value:
                break
            threading.Event().wait(0.01)
    assert [p["stage"] for p in published] == [s.value for s, _ in stages]
    assert {p["state"] for p in published} == {"running"}
    assert written == []  # job_start has just written the row: the stage changes linger
    sink.drain()
    assert written == ["device"]  # one write for four stage changes, the newest
    assert LoadJob.objects.get(pk=job.pk).state == "running"
    assert LoadJob.objects.get(pk=job.pk).stage == "device"
    sink.close()


def first_event_published(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[LoadJob, progress_sink.ProgressSink, list[dict[str, Any]], list[tuple[str, ...]]]:
    """A sink that has published a new job's first event and written nothing yet (a long linger):
    the job, the sink, what was published, and each transition tried from here on."""
    job = services.job_start(model_name="m", model_path="/m", device="cpu", dtype="auto", source="web")
    monkeypatch.setattr(progress_sink, "LINGER_S", 5.0)
    published: list[dict[str, Any]] = []
    tried: list[tuple[str, ...]] = []
    real = services._transition

    def counted(job: LoadJob, allowed: tuple[str, ...], **fields: Any) -> bool:
        tried.append(tuple(str(a) for a in allowed))
        return real(job, allowed, **fields)

    monkeypatch.setattr(services, "_transition", counted)
    monkeypatch.setattr(progress_sink.publisher, "send", lambda state, force=True: published.append(state["job"]))
    sink = progress_sink.ProgressSink(job)
    sink.offer(ProgressEvent(Stage.TOKENIZER, 30.0, "t"), True)
    for _ in range(500):
        if published:
            break
        threading.Event().wait(0.01)
    assert published and not tried
    return job, sink, published, tried


def test_a_load_done_within_the_linger_keeps_when_it_began_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its only progress row is superseded by the outcome: the outcome carries the start time."""
    job, sink, published, _tried = first_event_published(monkeypatch)
    assert published[0]["state"] == "running" and published[0]["started_at"]
    sink.drain(superseded=True)
    final = ProgressEvent(Stage.DONE, 100.0, "done").to_dict()
    assert services.job_succeed(job=job, device="cpu", dtype="bfloat16", metadata={}, event=final)
    sink.close()
    row = LoadJob.objects.get(pk=job.pk)
    assert row.state == "succeeded" and row.started_at is not None and row.started_at < row.finished_at
    assert row.started_at.isoformat() == published[0]["started_at"]


def test_the_first_row_write_is_one_transition(monkeypatch: pytest.MonkeyPatch) -> None:
    job, sink, _published, tried = first_event_published(monkeypatch)
    sink.drain()
    assert tried == [("queued",)]  # queued → running at once, not "running?" first
    assert LoadJob.objects.get(pk=job.pk).state == "running"
    sink.close()
