"""Try the loaded model: the generate API's contract, greedy answers equal to plain transformers',
cancel, the 409s, a late joiner's first snapshot, and the load's click-to-first-token in history."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from loader.jobs import gen_state
from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob

from .conftest import load_in_process, wait_finished
from .test_websocket import connect

pytestmark = pytest.mark.django_db(transaction=True)
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def post(client: Client, path: str, body: dict[str, Any], lang: str = "ko") -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json", HTTP_ACCEPT_LANGUAGE=lang)


def load(client: Client, name: str = "tiny") -> LoadJob:
    res = post(client, "/api/load", {"model": name, "dtype": "float32"})
    assert res.status_code == 202, res.content
    job = wait_finished(res.json()["job"]["id"], timeout=90)
    assert job.state == "succeeded", job.error_detail
    return job


def wait_generation(gen_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = gen_state.current()
        if current is not None and current["id"] == gen_id and current["state"] != "running":
            return current
        time.sleep(0.02)
    raise TimeoutError(f"generation {gen_id} still running")


def plain_greedy(folder: Path, prompt: str, tokens: int) -> str:
    import torch

    loaded = load_in_process(folder, dtype="float32")
    ids = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model.generate(**ids, max_new_tokens=tokens, do_sample=False)
    return str(loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


@pytest.fixture(autouse=True)
def _empty() -> None:
    MODEL_HOST.unload()


def test_without_a_model_generate_is_409_in_the_requests_language(client: Client) -> None:
    for lang in ("ko", "en"):
        res = post(client, "/api/generate", {"prompt": "hi"}, lang)
        assert res.status_code == 409
        assert bool(HANGUL.search(res.json()["error"])) is (lang == "ko"), res.json()


@pytest.mark.parametrize(
    "body",
    [{}, {"prompt": ""}, {"prompt": "x" * 4001}, {"prompt": 5}, {"prompt": "hi", "max_new_tokens": 0},
     {"prompt": "hi", "max_new_tokens": 257}, {"prompt": "hi", "max_new_tokens": "5"},
     {"prompt": "hi", "max_new_tokens": True}, {"prompt": "hi", "wait": "yes"}, {"prompt": "hi", "chat": 1}],
)  # fmt: skip
def test_bad_input_is_400_with_words(client: Client, body: dict[str, Any]) -> None:
    for lang in ("ko", "en"):
        res = post(client, "/api/generate", body, lang)
        assert res.status_code == 400, res.content
        assert bool(HANGUL.search(res.json()["error"])) is (lang == "ko")


def test_a_greedy_answer_equals_plain_transformers_and_repeats(client: Client, models_root: Path) -> None:
    job = load(client)
    results = []
    for prompt in ("MACtuner loads models", "안녕하세요, 모델"):
        for _ in range(2):
            res = post(client, "/api/generate", {"prompt": prompt, "max_new_tokens": 8, "wait": True})
            assert res.status_code == 200, res.content
            body = res.json()
            assert body["state"] == "done" and 1 <= body["tokens"] <= 8, body
            assert body["first_token_s"] > 0 and isinstance(body["text"], str)
            results.append((prompt, body["text"]))
    assert results[0] == results[1] and results[2] == results[3]  # greedy: the same text each time
    assert results[0][1] == plain_greedy(models_root / "tiny", "MACtuner loads models", 8)
    job.refresh_from_db()
    assert job.first_token_s is not None and job.first_token_s > (job.finished_at - job.created_at).total_seconds()
    history = client.get("/api/jobs").json()["jobs"]
    assert next(j for j in history if j["id"] == job.id)["first_token_s"] == job.first_token_s


def test_a_second_generation_or_a_missing_chat_template_are_handled(client: Client) -> None:
    load(client)
    res = post(client, "/api/generate", {"prompt": "count", "max_new_tokens": 256, "chat": True})
    assert res.status_code == 202, res.content
    gen = res.json()["generation"]
    assert gen["state"] == "running"
    again = post(client, "/api/generate", {"prompt": "again"}, "en")
    assert again.status_code == 409 and not HANGUL.search(again.json()["error"])
    unload = client.post("/api/unload")
    assert unload.status_code == 409  # the host is busy generating
    stop = post(client, "/api/generate/cancel", {})
    assert stop.status_code == 202
    ended = wait_generation(gen["id"], timeout=10)
    assert ended["state"] in ("cancelled", "done") and ended["tokens"] < 256
    assert ended["chat"] is True  # asked for; the tiny tokenizer has no template, so the prompt went plain
    assert post(client, "/api/generate/cancel", {}).status_code == 409  # nothing runs now
    assert client.get("/api/status").json()["loaded"]["name"] == "tiny"  # the model stays


def test_a_late_joiner_gets_the_generation_in_its_first_snapshot(client: Client) -> None:
    load(client)
    res = post(client, "/api/generate", {"prompt": "hello", "max_new_tokens": 4, "wait": True})
    assert res.status_code == 200

    async def first() -> dict[str, Any]:
        comm = await connect()
        message: dict[str, Any] = await comm.receive_json_from(timeout=10)
        await comm.disconnect()
        return message

    message = async_to_sync(first)()
    assert message["generation"]["id"] == res.json()["id"] and message["generation"]["text"] == res.json()["text"]
    assert message["loaded"]["name"] == "tiny"


def test_a_generation_stuck_in_native_code_costs_the_host_and_the_page_says_the_model_is_gone(
    client: Client, test_host: Any
) -> None:
    test_host("stuck_generation")  # the real host; a prompt "STUCK" holds its GIL in a regex
    load(client)
    res = post(client, "/api/generate", {"prompt": "STUCK", "max_new_tokens": 4})
    assert res.status_code == 202, res.content
    gen_id = res.json()["generation"]["id"]
    assert post(client, "/api/generate/cancel", {}).status_code == 202
    ended = wait_generation(gen_id, timeout=30)
    assert ended["state"] == "cancelled" and ended["error"]["code"] == "host_killed", ended
    assert not HANGUL.search(ended["error"]["text"]["en"])
    status = client.get("/api/status", HTTP_ACCEPT_LANGUAGE="en").json()
    assert status["loaded"] is None and status["lost"]["code"] == "generation_killed", status
    assert "tiny" in status["lost"]["text"]["en"]
    load(client)  # a fresh host: the next load works
    res = post(client, "/api/generate", {"prompt": "hello", "max_new_tokens": 2, "wait": True})
    assert res.status_code == 200 and res.json()["state"] == "done"


def test_a_load_clicked_during_a_generation_stops_the_generation_first(client: Client) -> None:
    load(client)
    res = post(client, "/api/generate", {"prompt": "long", "max_new_tokens": 256})
    assert res.status_code == 202
    gen_id = res.json()["generation"]["id"]
    job = load(client, "tied")  # the load waits for the generation to stop, then runs
    ended = wait_generation(gen_id, timeout=5)
    assert ended["state"] in ("cancelled", "done") and job.state == "succeeded"
    status = client.get("/api/status").json()
    assert status["loaded"]["name"] == "tied" and status["generation"] is None  # the last answer was tiny's
