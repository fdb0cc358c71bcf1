"""The formats users have on disk, through the HTTP API: ``pytorch_model.bin`` loads (safe unpickler,
same tensors as safetensors), a malicious pickle is refused and never runs, safetensors win over
``.bin``, GGUF/MLX/ONNX are named and refused with what to do, and the HF cache is offered as
``org/name`` through ``huggingface_hub``'s scan."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.pipeline import LoadRequest, ModelSlot, ProgressEvent, Stage
from mactuner_dev import layouts

from .conftest import load_in_process, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)
MARKER = "pickle-ran"


@pytest.fixture(scope="module")
def formats_root(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    models = root / "models"
    models.mkdir()
    tiny = models_root / "tiny"
    shutil.copytree(tiny, models / "good")
    layouts.write_bin(models / "bin-single", tiny)
    layouts.write_bin(models / "bin-sharded", tiny, shards=3)
    layouts.write_bin(models / "both", tiny, keep_safetensors=True)
    (models / "both" / "pytorch_model.bin").unlink()  # safetensors beside a malicious .bin
    layouts.write_malicious_bin(root / "tmp-evil", tiny, root / MARKER)
    shutil.move(root / "tmp-evil" / "pytorch_model.bin", models / "both" / "pytorch_model.bin")
    layouts.write_malicious_bin(models / "evil-zip", tiny, root / MARKER)
    layouts.write_malicious_bin(models / "evil-raw", tiny, root / MARKER, raw_pickle=True)
    layouts.write_gguf(models / "gguf-folder" / "model-Q4_K_M.gguf")
    layouts.write_gguf(models / "lone-Q8_0.gguf")
    layouts.write_mlx(models / "mlx-4bit", tiny)
    (models / "onnx-export").mkdir()
    (models / "onnx-export" / "model.onnx").write_bytes(b"\x08\x07onnx")
    shutil.copy(tiny / "config.json", models / "onnx-export" / "config.json")
    cache = root / "hub"
    layouts.write_hf_cache(cache, "acme/tiny", tiny, revision="a" * 40)
    layouts.write_hf_cache(cache, "acme/tiny", models_root / "tied", revision="b" * 40, ref="other")
    layouts.write_hf_cache(cache, "evil/fifo-ref", tiny)
    (cache / "models--evil--fifo-ref" / "refs" / "main").unlink()
    os.mkfifo(cache / "models--evil--fifo-ref" / "refs" / "main")  # scan_cache_dir would block opening it
    layouts.write_hf_cache(cache, "evil/escape", tiny)
    (cache / "models--evil--escape" / "refs" / "main").write_text("../../../models/good")  # a path, not a revision
    return root


@pytest.fixture(autouse=True)
def _roots(formats_root: Path, settings: object) -> None:
    settings.MACTUNER_MODELS_DIR = formats_root / "models"  # type: ignore[attr-defined]
    settings.MACTUNER_HF_CACHE = formats_root / "hub"  # type: ignore[attr-defined]
    MODEL_HOST.unload()


def _load(client: Client, name: str, **extra: object) -> object:
    res = client.post("/api/load", data=json.dumps({"model": name, **extra}), content_type="application/json")
    assert res.status_code == 202, res.content
    return wait_finished(res.json()["job"]["id"], timeout=90)


def _reference(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    out: dict[str, object] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_the_list_names_every_format_and_why_it_does_not_load(client: Client, formats_root: Path) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["bin-single"]["format"] == "bin" and models["bin-single"]["problem"] is None
    assert models["bin-sharded"]["shards"] == 3 and models["bin-sharded"]["architecture"] == "LlamaForCausalLM"
    assert models["both"]["format"] == "safetensors" and models["both"]["shards"] == 3
    for name, word in (("gguf-folder", "llama.cpp"), ("lone-Q8_0.gguf", "Ollama"), ("mlx-4bit", "MLX"),
                       ("onnx-export", "ONNX")):  # fmt: skip
        assert word in (models[name]["problem"] or ""), models[name]
    assert models["lone-Q8_0.gguf"]["format"] == "gguf" and models["lone-Q8_0.gguf"]["size_bytes"] > 0
    cached = models["acme/tiny"]
    assert cached["source"] == "hf-cache" and cached["problem"] is None and cached["shards"] == 3
    evil = [m for name, m in models.items() if name.startswith("evil/")]  # a FIFO ref, a revision that is a path
    assert evil and all(m["problem"] for m in evil), evil


@pytest.mark.parametrize("name", ["bin-single", "bin-sharded"])
def test_pytorch_bin_loads_the_same_tensors_as_safetensors(
    client: Client, formats_root: Path, models_root: Path, name: str
) -> None:
    job = _load(client, name, device="cpu")
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    assert job.metadata["format"] == "bin" and job.metadata["shards"] == (3 if name == "bin-sharded" else 1)
    assert job.detail["bytes_done"] == job.detail["bytes_total"] > 0
    state = load_in_process(formats_root / "models" / name).model.state_dict()
    reference = _reference(models_root / "tiny")
    assert set(reference) <= set(state)
    for key, tensor in reference.items():
        assert state[key].dtype == tensor.dtype and state[key].equal(tensor), key  # type: ignore[attr-defined]


def test_sharded_bin_reports_bytes_shard_by_shard(formats_root: Path) -> None:
    events: list[ProgressEvent] = []
    request = LoadRequest(formats_root / "models" / "bin-sharded", device="cpu", read_limit_bps=20e6)
    ModelSlot().load(request, events.append, threading.Event())
    weights = [e.detail for e in events if e.stage is Stage.WEIGHTS]
    done = [d.bytes_done for d in weights]
    assert done == sorted(done) and done[-1] == weights[-1].bytes_total
    assert {d.shard for d in weights} >= {1, 2, 3} and weights[-1].shards == 3


@pytest.mark.parametrize("name", ["evil-zip", "evil-raw"])
def test_a_malicious_pickle_is_refused_and_never_runs(client: Client, formats_root: Path, name: str) -> None:
    job = _load(client, name)
    assert job.state == "failed" and job.error_code == "unsafe_pickle", (job.error_code, job.error_detail)
    assert "pickle" in job.error_message and "system" in job.error_detail
    assert not (formats_root / MARKER).exists()
    assert _load(client, "good").state == "succeeded"  # the next load works


def test_safetensors_win_over_a_bin_beside_them(client: Client, formats_root: Path) -> None:
    job = _load(client, "both")
    assert job.state == "succeeded" and job.metadata["format"] == "safetensors"
    assert not (formats_root / MARKER).exists()  # the .bin was never unpickled


@pytest.mark.parametrize(
    ("name", "label", "advice"),
    [
        ("gguf-folder", "GGUF", "llama.cpp"),
        ("lone-Q8_0.gguf", "GGUF", "Ollama"),
        ("mlx-4bit", "MLX", "mlx-lm"),
        ("onnx-export", "ONNX", "onnxruntime"),
    ],
)
def test_formats_transformers_cannot_load_are_refused_by_name(
    client: Client, formats_root: Path, name: str, label: str, advice: str
) -> None:
    job = _load(client, name)
    assert job.state == "failed" and job.error_code == "unsupported_format", (job.error_code, job.error_detail)
    assert label in job.error_message and advice in job.error_message
    assert "Traceback" not in job.error_detail
    assert _load(client, "good").state == "succeeded"


def test_hf_cache_model_loads_by_org_name_at_the_revision_main_names(client: Client, formats_root: Path) -> None:
    job = _load(client, "acme/tiny")
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    assert job.model_path.endswith("a" * 40)  # refs/main, not the other (newer) revision
    assert client.get("/api/status").json()["loaded"]["name"] == "acme/tiny"


def test_the_malicious_pickle_really_runs_code_when_unpickled_unsafely(models_root: Path, tmp_path: Path) -> None:
    """The refusal tests above mean something: the same payload, loaded the unsafe way, runs."""
    import torch

    marker = tmp_path / "ran"
    folder = layouts.write_malicious_bin(tmp_path / "evil", models_root / "tiny", marker)
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert marker.exists()
