"""GET /api/fit: each model's memory verdict for the chosen device, from the load's own estimate,
answered at once whatever the model host is doing."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob
from loader.pipeline import LoadRequest, ModelSlot, fit
from loader.pipeline.errors import DoesNotFit
from mactuner_dev import layouts
from mactuner_dev.synth import write_checkpoint

from .conftest import wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def write_giant(out: Path, layers: int = 48) -> Path:
    """A Llama of ~40 B float32 parameters (~160 GB) whose one shard is a sparse file: its header is
    real and checked, its data is holes. Nothing reads the data: the estimate needs the header only."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000, hidden_size=8192, intermediate_size=22016, num_hidden_layers=layers,
        num_attention_heads=64, num_key_value_heads=64, max_position_embeddings=2048,
    )  # fmt: skip
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    out.mkdir(parents=True)
    config.save_pretrained(out)
    with torch.device("meta"):
        names = [(n, tuple(p.shape)) for n, p in LlamaForCausalLM(config).named_parameters()]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in names:
        size = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    shard = out / "model.safetensors"
    with shard.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    return out


@pytest.fixture(scope="module")
def fit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fit")
    write_checkpoint(root / "tiny", params=4_000_000, shards=2, seed=4)
    layouts.write_lora(root / "tiny-lora", root / "tiny", "tiny", seed=5)
    write_giant(root / "giant")
    (root / "no-config").mkdir()
    (root / "no-config" / "model.safetensors").write_bytes(b"")
    return root


@pytest.fixture(autouse=True)
def _fit_models(settings: Any, fit_root: Path) -> None:
    settings.MACTUNER_MODELS_DIR = fit_root
    MODEL_HOST.unload()


def ask(client: Client, device: str = "cpu", dtype: str = "auto", lang: str = "ko") -> tuple[int, dict[str, Any]]:
    res = client.get("/api/fit", {"device": device, "dtype": dtype}, HTTP_ACCEPT_LANGUAGE=lang)
    return res.status_code, res.json()


def settled(client: Client, device: str = "cpu", dtype: str = "auto", timeout: float = 180) -> dict[str, Any]:
    """The answer once the host has estimated every model (it is started here, as a server does)."""
    MODEL_HOST.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = ask(client, device, dtype)
        assert status == 200, body
        if not body["pending"] and body["host"] in ("ready", "starting") and body["target"]:
            return body
        time.sleep(0.2)
    raise TimeoutError(body)


def hints(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in body["models"]}


def refused_need(path: Path, dtype: str) -> int:
    """What the load's own check computes: the need its refusal reports when nothing may fit."""
    from loader.catalog.listing import resolve_base

    request = LoadRequest(path, "cpu", dtype, name=path.name, base_resolver=resolve_base)
    with pytest.raises(DoesNotFit) as refused:
        ModelSlot().load(request, lambda _e: None, threading.Event(), max_bytes=1)
    found = re.search(r"need=(\d+)", refused.value.detail)
    assert found is not None, refused.value.detail
    return int(found.group(1))


def test_a_host_not_started_is_not_started_by_the_hint_and_says_so(client: Client) -> None:
    MODEL_HOST.stop()
    status, body = ask(client)
    assert status == 200 and body["host"] == "stopped" and MODEL_HOST.pid is None
    tiny = hints(body)["tiny"]
    assert tiny["fit"] == "unknown" and "모델 호스트" in tiny["why"]
    assert ask(client, lang="en")[1]["models"][0]["why"].isascii()


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_the_hosts_estimate_is_what_the_loads_own_check_computes(client: Client, fit_root: Path, dtype: str) -> None:
    body = settled(client, dtype=dtype)
    got = hints(body)
    assert body["target"] == "cpu" and body["available_bytes"] > 0 and body["tight_share"] == fit.TIGHT_SHARE
    assert got["tiny"]["need_bytes"] == refused_need(fit_root / "tiny", dtype)
    assert got["tiny"]["fit"] == "fits" and got["tiny"]["available_bytes"] == body["available_bytes"]
    # An adapter needs its base and its own tensors: more than the base alone, as its load checks.
    assert got["tiny-lora"]["need_bytes"] == refused_need(fit_root / "tiny-lora", dtype)
    assert got["tiny-lora"]["need_bytes"] > got["tiny"]["need_bytes"]


def test_a_model_bigger_than_this_machines_memory_reads_wont_fit_as_its_load_refuses_it(
    client: Client, fit_root: Path
) -> None:
    got = hints(settled(client))
    giant = got["giant"]
    assert giant["fit"] == "wont_fit" and giant["need_bytes"] > giant["available_bytes"] > 0
    assert giant["need_bytes"] > 100e9 and "메모리가 부족합니다" in giant["why"]
    # The load's own check (after the same preflight) refuses it with the same figure.
    from loader.pipeline.preflight import preflight

    request = LoadRequest(fit_root / "giant", "cpu", "auto")
    with pytest.raises(DoesNotFit) as refused:
        ModelSlot()._check_fits(request, preflight(request), None)
    assert f"need={giant['need_bytes']} " in refused.value.detail
    # A folder the list already refuses is unknown, with the list's own reason.
    assert got["no-config"]["fit"] == "unknown" and got["no-config"]["need_bytes"] is None
    assert "config.json" in got["no-config"]["why"]
    english = hints(ask(client, lang="en")[1])["giant"]["why"]
    assert english.isascii() and "GB" in english


def test_the_verdict_is_tight_past_80_percent_of_the_room_and_wont_fit_past_all_of_it() -> None:
    assert fit.verdict(80, 100, "cpu") == ("fits", None)
    verdict, why = fit.verdict(81, 100, "cpu")
    assert verdict == "tight" and why is not None and "80%" in why
    verdict, why = fit.verdict(101, 100, "mps")
    assert verdict == "wont_fit" and why is not None and "mps" in why


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"device": "tpu"}, "알 수 없는 장치"),
        ({"dtype": "int4"}, "알 수 없는 dtype"),
        ({"device": "cuda"}, "쓸 수 없습니다"),  # no NVIDIA driver on this machine: refused as /api/load does
        ({"device": ["cpu", "auto"]}, "한 번씩만"),
    ],
)
def test_a_bad_device_or_dtype_is_a_400_in_plain_words(client: Client, query: dict[str, Any], words: str) -> None:
    if query.get("device") == "cuda":
        from loader.web.devices import cuda_driver_present

        if cuda_driver_present():
            pytest.skip("this machine has a CUDA driver")
    res = client.get("/api/fit", query, HTTP_ACCEPT_LANGUAGE="ko")
    assert res.status_code == 400 and words in res.json()["error"]
    english = client.get("/api/fit", query, HTTP_ACCEPT_LANGUAGE="en").json()["error"]
    assert english.isascii()


def test_the_hint_answers_while_a_load_runs_with_what_is_known(client: Client, settings: Any) -> None:
    before = hints(settled(client, device="auto", dtype="auto"))
    settings.MACTUNER_READ_LIMIT_MBPS = 1  # tiny's weights take seconds to read
    res = client.post("/api/load", {"model": "tiny", "device": "cpu"}, content_type="application/json")
    job_id = res.json()["job"]["id"]
    deadline = time.monotonic() + 60
    while LoadJob.objects.get(pk=job_id).stage != "weights" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert MODEL_HOST.busy
    status, known = ask(client, device="auto", dtype="auto")
    status2, fresh = ask(client, device="auto", dtype="float16")  # never asked: the host is not disturbed
    assert LoadJob.objects.get(pk=job_id).is_active, "both answers came while the load was still running"
    assert status == status2 == 200 and known["host"] == fresh["host"] == "busy"
    assert hints(known)["tiny"]["fit"] == before["tiny"]["fit"] == "fits"
    assert hints(known)["tiny"]["need_bytes"] == before["tiny"]["need_bytes"]
    assert hints(fresh)["tiny"]["fit"] == "unknown" and "로드하거나 생성하는 중" in hints(fresh)["tiny"]["why"]
    client.post("/api/cancel")
    assert wait_finished(job_id).state == "cancelled"
    assert hints(settled(client, device="auto", dtype="float16"))["tiny"]["fit"] == "fits"


def test_a_folder_added_after_an_answer_is_estimated_on_the_next_asks(client: Client, fit_root: Path) -> None:
    assert "tiny-copy" not in hints(settled(client))
    shutil.copytree(fit_root / "tiny", fit_root / "tiny-copy")
    try:
        status, body = ask(client)  # listed at once; estimated now or, pending, on the next ask
        assert status == 200 and "tiny-copy" in hints(body)
        assert hints(body)["tiny-copy"]["fit"] == "fits" or body["pending"]
        got = hints(settled(client))["tiny-copy"]
        assert got["fit"] == "fits" and got["need_bytes"] == hints(body)["tiny"]["need_bytes"]
    finally:
        shutil.rmtree(fit_root / "tiny-copy")


def test_a_query_of_too_many_parameters_is_a_400_in_words_not_a_500(client: Client) -> None:
    # Django raises on reading such a query (and its debug page reads it again: a 500).
    flood = {f"x{i}": "1" for i in range(2000)}
    for path in ("/api/fit", "/api/jobs"):
        res = client.get(path, flood | {"device": "cpu"}, HTTP_ACCEPT_LANGUAGE="ko")
        assert res.status_code == 400 and "너무 많습니다" in res.json()["error"], path
        english = client.get(path, flood, HTTP_ACCEPT_LANGUAGE="en").json()["error"]
        assert english.isascii() and "query parameters" in english
    huge = client.get("/api/fit", {"device": "x" * 10_000}).json()["error"]
    assert len(huge) < 200  # the bad value is quoted, not echoed whole
    assert ask(client)[0] == 200


def test_a_host_that_died_with_an_ask_in_flight_reads_stopped_not_forever_pending(client: Client) -> None:
    import os
    import signal

    settled(client)
    process = MODEL_HOST.start()
    os.kill(process.pid, signal.SIGSTOP)  # it takes the ask but never answers it
    try:
        status, body = ask(client, dtype="float16", lang="ko")
        assert status == 200 and body["pending"]
    finally:
        os.kill(process.pid, signal.SIGKILL)
    assert process.dead.wait(30)
    status, body = ask(client, dtype="float16")
    assert status == 200 and body["host"] == "stopped" and not body["pending"], body
    assert "모델 호스트" in hints(body)["tiny"]["why"]
    assert settled(client, dtype="float16")["host"] in ("ready", "starting")  # a fresh host answers again


def test_a_hint_reads_the_folders_from_the_lists_cache_not_by_listing_them_again(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listing 10,000 folders takes seconds: a picker asking twice a second must not pay it each time.
    from loader.catalog import cache as catalog_cache
    from loader.catalog import listing

    monkeypatch.setattr(catalog_cache.cache, "fresh_s", 3600.0)
    status, first = ask(client)
    assert status == 200
    listings: list[Path] = []
    real = listing._local_models
    monkeypatch.setattr(listing, "_local_models", lambda root: listings.append(root) or real(root))
    status, again = ask(client)
    assert status == 200 and listings == []
    assert [m["name"] for m in again["models"]] == [m["name"] for m in first["models"]]
    assert hints(again)["tiny-lora"]["fit"] in ("fits", "unknown") and "no-config" in hints(again)
