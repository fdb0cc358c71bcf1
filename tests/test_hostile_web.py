"""Through the HTTP API: hostile folders never break the list, fail their job with a typed code,
keep the job history, and the next load of a good model works."""

from __future__ import annotations

import json
import os
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob

from .conftest import wait_finished
from .test_hostile_checkpoints import SECRET, _rename_all

pytestmark = pytest.mark.django_db(transaction=True)


def _config(folder: Path, text: str) -> None:
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(text)


@pytest.fixture
def hostile_root(models_root: Path, tmp_path: Path, settings: object) -> Path:
    """A models root with one good model and folders a stranger could have sent."""
    root = tmp_path / "models"
    root.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    shutil.copytree(models_root / "tiny", root / "good")
    for name in ("arch-five", "arch-dict", "deep", "huge", "fifo-config", "fifo-tokenizer", "zero", "renamed"):
        shutil.copytree(models_root / "tiny", root / name)
    config = json.loads((root / "good" / "config.json").read_text())
    _config(root / "arch-five", json.dumps({**config, "architectures": 5}))
    _config(root / "arch-dict", json.dumps({**config, "architectures": {"x": 1}}))
    _config(root / "deep", "[" * 200_000 + "]" * 200_000)
    (root / "huge" / "config.json").unlink()
    with (root / "huge" / "config.json").open("wb") as fh:
        fh.truncate(100 * 1024 * 1024)
    (root / "fifo-config" / "config.json").unlink()
    os.mkfifo(root / "fifo-config" / "config.json")
    (root / "fifo-tokenizer" / "tokenizer.json").unlink()
    os.mkfifo(root / "fifo-tokenizer" / "tokenizer.json")
    (root / "zero" / "config.json").unlink()
    (root / "zero" / "config.json").symlink_to("/dev/zero")
    _rename_all(root / "renamed", secret)
    # HF cache: a ref that climbs out, and a snapshot linked outside the repo
    cache = tmp_path / "hub"
    (cache / "models--evil--ref" / "refs").mkdir(parents=True)
    (cache / "models--evil--ref" / "snapshots").mkdir()
    (cache / "models--evil--ref" / "refs" / "main").write_text("../../../good")
    (cache / "models--evil--link" / "snapshots").mkdir(parents=True)
    (cache / "models--evil--link" / "snapshots" / "abc").symlink_to(root / "good")
    (cache / "models--evil--fifo" / "refs").mkdir(parents=True)
    shutil.copytree(root / "good", cache / "models--evil--fifo" / "snapshots" / "abc")
    os.mkfifo(cache / "models--evil--fifo" / "refs" / "main")
    settings.MACTUNER_MODELS_DIR = root  # type: ignore[attr-defined]
    settings.MACTUNER_HF_CACHE = cache  # type: ignore[attr-defined]
    return root


@pytest.fixture(autouse=True)
def _empty_slot() -> None:
    MODEL_HOST.unload()


def test_model_list_survives_every_hostile_folder(client: Client, hostile_root: Path) -> None:
    res = client.get("/api/models")
    assert res.status_code == 200
    models = {m["name"]: m for m in res.json()["models"]}
    assert models["good"]["problem"] is None and models["good"]["architecture"] == "LlamaForCausalLM"
    for name in ("arch-five", "arch-dict", "deep", "huge", "fifo-config", "zero"):
        assert models[name]["problem"], name  # listed, with the reason
        assert set(models[name]) >= {"name", "size_bytes", "shards", "architecture", "model_type", "source"}
    assert models["arch-five"]["architecture"] is None
    assert all(m["problem"] is None for name, m in models.items() if name in ("fifo-tokenizer", "renamed"))
    evil = {name: m for name, m in models.items() if name.startswith("evil/")}
    assert set(evil) == {"evil/ref", "evil/link", "evil/fifo"}  # HF-cache escapes: listed with why, never offered
    assert all(m["problem"] and not m["shards"] for m in evil.values()), evil
    out = StringIO()
    call_command("loadmodel", "--list", stdout=out)
    assert "good" in out.getvalue() and "arch-dict" in out.getvalue()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("fifo-config", "unsafe_file"),
        ("fifo-tokenizer", "unsafe_file"),
        ("zero", "unsafe_file"),
        ("deep", "config_unreadable"),
        ("arch-five", "config_unreadable"),
        ("huge", "file_too_large"),
        ("renamed", "weights_mismatch"),
    ],
)
def test_hostile_load_fails_typed_and_the_next_load_works(
    client: Client, hostile_root: Path, name: str, code: str
) -> None:
    res = client.post("/api/load", data=json.dumps({"model": name}), content_type="application/json")
    assert res.status_code == 202
    job = wait_finished(res.json()["job"]["id"], timeout=60)
    assert job.state == "failed" and job.error_code == code, (job.error_code, job.error_detail)
    assert "SECRET" not in job.error_message + job.error_detail
    res = client.post("/api/load", data=json.dumps({"model": "good"}), content_type="application/json")
    assert res.status_code == 202
    assert wait_finished(res.json()["job"]["id"]).state == "succeeded"
    assert LoadJob.objects.count() == 2  # the failed job stays in the history
    status = client.get("/api/status").json()
    assert status["loaded"]["name"] == "good"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_is_listed_with_its_problem(client: Client, hostile_root: Path) -> None:
    (hostile_root / "arch-five").chmod(0)
    try:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models["arch-five"]["problem"]
    finally:
        (hostile_root / "arch-five").chmod(0o755)


def _strict(text: str) -> object:
    """What a browser's ``JSON.parse`` accepts: no NaN or Infinity."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_non_finite_number_in_a_checkpoint_never_breaks_the_list_and_is_a_typed_refusal(
    client: Client, hostile_root: Path, models_root: Path
) -> None:
    from mactuner_dev import layouts

    layouts.write_lora(hostile_root / "nan-lora", models_root / "tiny", "good", seed=3)
    adapter = hostile_root / "nan-lora" / "adapter_config.json"
    adapter.write_text(json.dumps({**json.loads(adapter.read_text()), "lora_alpha": float("nan")}))  # Python writes NaN
    shutil.copytree(models_root / "tiny", hostile_root / "inf-config")
    config = json.loads((hostile_root / "good" / "config.json").read_text())
    _config(hostile_root / "inf-config", json.dumps({**config, "rope_theta": float("inf")}))
    listed = _strict(client.get("/api/models").content.decode())
    models = {m["name"]: m for m in listed["models"]}  # type: ignore[index]
    assert models["good"]["problem"] is None
    assert models["nan-lora"]["problem"] and models["inf-config"]["problem"], "listed, with the problem said"
    for name in ("nan-lora", "inf-config"):
        res = client.post("/api/load", data={"model": name}, content_type="application/json")
        if res.status_code == 202:
            job = wait_finished(res.json()["job"]["id"], timeout=90)
            assert job.state == "failed" and job.error_code == "config_unreadable", (name, job.error_code)
            assert "non-finite" in job.error_detail
        else:
            assert res.status_code == 400, (name, res.content)
        _strict(client.get("/api/status").content.decode())
    res = client.post("/api/load", data={"model": "good"}, content_type="application/json")
    assert wait_finished(res.json()["job"]["id"], timeout=90).state == "succeeded"
