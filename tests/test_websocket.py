"""The websocket on the real in-memory channel layer: state first, then snapshots to the end."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from loader.jobs import runner, services
from loader.jobs.local import MODEL_HOST, TOKENS
from loader.jobs.models import LoadJob
from mactuner_site.asgi import application as asgi_application

pytestmark = pytest.mark.django_db(transaction=True)


def application() -> Any:
    return asgi_application


async def connect() -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application(), "/ws/loader/", headers=[(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    )
    connected, _ = await comm.connect()
    assert connected
    return comm


async def receive_until_final(comm: WebsocketCommunicator, timeout: float = 60) -> list[dict[str, Any]]:
    messages = []
    while True:
        msg = await comm.receive_json_from(timeout=timeout)
        messages.append(msg)
        if msg["job"] and not msg["job"]["active"]:
            return messages


@pytest.fixture(autouse=True)
def _empty_slot() -> None:
    MODEL_HOST.unload()


def test_first_message_is_the_current_state() -> None:
    async def body() -> None:
        comm = await connect()
        first = await comm.receive_json_from(timeout=5)
        assert first.pop("emitted_at") > 0
        assert isinstance(first.pop("catalog")["version"], str)  # the model folders' (tests/test_catalog_push.py)
        assert first == {"type": "snapshot", "job": None, "loaded": None, "held": [], "lost": None, "generation": None}
        await comm.disconnect()

    async_to_sync(body)()


def test_snapshots_follow_a_web_load_to_success() -> None:
    async def body() -> None:
        comm = await connect()
        await comm.receive_json_from(timeout=5)
        job = await database_sync_to_async(services.job_start)(
            model_name="tiny", model_path=str(_models_dir() / "tiny"), device="cpu", dtype="auto", source="web"
        )
        runner.start_job_thread(job)
        messages = await receive_until_final(comm)
        jobs = [m["job"] for m in messages]
        assert all(m["type"] == "snapshot" for m in messages)
        assert jobs[-1]["state"] == "succeeded" and jobs[-1]["percent"] == 100
        assert messages[-1]["loaded"]["name"] == "tiny"
        percents = [j["percent"] for j in jobs]
        assert percents == sorted(percents)
        stages = list(dict.fromkeys(j["stage"] for j in jobs))
        assert stages[-1] == "done" and "weights" in stages and "tokenizer" in stages
        for key in ("id", "state", "stage", "percent", "message", "error", "model", "device", "dtype", "source",
                    "detail", "timings", "metadata", "stalled", "created_at", "started_at", "finished_at", "updated_at"):  # fmt: skip
            assert key in jobs[-1]
        await comm.disconnect()

    async_to_sync(body)()


def test_late_joiner_gets_the_running_job_first(settings: Any) -> None:
    settings.MACTUNER_READ_LIMIT_MBPS = 40

    async def body() -> None:
        job = await database_sync_to_async(services.job_start)(
            model_name="medium", model_path=str(_models_dir() / "medium"), device="cpu", dtype="auto", source="web"
        )
        early = await connect()
        await early.receive_json_from(timeout=5)
        runner.start_job_thread(job)
        for _ in range(200):
            current = await database_sync_to_async(LoadJob.objects.get)(pk=job.pk)
            if current.stage == "weights" and current.percent > 41:
                break
            await asyncio.sleep(0.05)
        late = await connect()
        first = await late.receive_json_from(timeout=5)
        assert first["job"]["id"] == job.pk and first["job"]["state"] == "running"
        assert first["job"]["percent"] > 40 and first["job"]["detail"]["shards"] == 4
        TOKENS.fire(job.pk)
        final = (await receive_until_final(late))[-1]
        assert final["job"]["state"] == "cancelled"
        await early.disconnect()
        await late.disconnect()

    async_to_sync(body)()


def test_foreign_origin_is_refused() -> None:
    async def body() -> None:
        comm = WebsocketCommunicator(
            application(), "/ws/loader/", headers=[(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1:8000")]
        )
        connected, _ = await comm.connect()
        assert not connected

    async_to_sync(body)()


def test_stall_flag_is_published_without_new_progress(settings: Any) -> None:
    settings.MACTUNER_STALL_SECONDS = 0.5

    async def body() -> None:
        job = await database_sync_to_async(services.job_start)(
            model_name="tiny", model_path="/nowhere", device="cpu", dtype="auto", source="web"
        )
        await database_sync_to_async(LoadJob.objects.filter(pk=job.pk).update)(state="running")
        _keep_owner_alive = threading.Event()  # the job is owned by this live process: not an orphan
        TOKENS._tokens[job.pk] = _keep_owner_alive
        try:
            comm = await connect()
            first = await comm.receive_json_from(timeout=5)
            stalled = first["job"]["stalled"]
            while not stalled:
                stalled = (await comm.receive_json_from(timeout=5))["job"]["stalled"]
            assert stalled is True
            await comm.disconnect()
        finally:
            TOKENS.close(job.pk)

    async_to_sync(body)()


def _models_dir() -> Any:
    from django.conf import settings

    return settings.MACTUNER_MODELS_DIR


def test_garbage_from_a_client_does_not_close_its_socket() -> None:
    async def body() -> None:
        comm = await connect()
        await comm.receive_json_from(timeout=5)
        await comm.send_to(text_data="not json {")
        await comm.send_to(bytes_data=b"\x00\xff")
        await comm.send_json_to({"type": "refresh"})
        again = await comm.receive_json_from(timeout=5)
        assert again["type"] == "snapshot"
        await comm.disconnect()

    async_to_sync(body)()
