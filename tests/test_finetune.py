"""Fine-tuning outputs through the HTTP API and ``loadmodel``: a Trainer ``run/checkpoint-N`` (named
with its step, its optimizer/scheduler/RNG files never opened) and PEFT adapters over their base
(metadata, the same outputs as peft's own loading, merge, a missing or wrong base refused typed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from mactuner_dev import layouts
from mactuner_dev.synth import write_checkpoint

from .conftest import PYTHON, ROOT, load_in_process, migrate, server_env, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def tuned_root(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tuned")
    models = root / "models"
    shutil.copytree(models_root / "tiny", models / "tiny")
    layouts.write_trainer_run(models / "run", steps=(500, 1000), params=2_000_000)
    (models / "run" / "checkpoint-1000" / "trainer_state.json").unlink()  # the step then comes from the name
    layouts.write_lora(models / "lora", models / "tiny", "tiny", seed=4)
    layouts.write_lora(models / "ia3", models / "tiny", "tiny", peft_type="IA3", targets=("k_proj", "v_proj"))
    layouts.write_lora(models / "lora-cached", models / "tiny", "acme/tiny-base", seed=5)
    layouts.write_lora(models / "lora-abs", models / "tiny", str(models / "tiny"), seed=6)
    layouts.write_lora(models / "lora-missing", models / "tiny", "nobody/missing-model")
    write_checkpoint(models / "narrow", params=1_000_000, layers=2, shards=1, seed=7)  # hidden 192, not 256
    layouts.write_lora(models / "lora-wrong-base", models / "tiny", "narrow")
    layouts.write_lora(models / "lora-untargeted", models / "tiny", "tiny")
    cfg = json.loads((models / "lora-untargeted" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["o_proj"]  # its tensors sit on q_proj/v_proj
    (models / "lora-untargeted" / "adapter_config.json").write_text(json.dumps(cfg))
    layouts.write_hf_cache(root / "hub", "acme/tiny-base", models_root / "tiny")
    return root


@pytest.fixture(autouse=True)
def _roots(tuned_root: Path, settings: object) -> None:
    settings.MACTUNER_MODELS_DIR = tuned_root / "models"  # type: ignore[attr-defined]
    settings.MACTUNER_HF_CACHE = tuned_root / "hub"  # type: ignore[attr-defined]
    MODEL_HOST.unload()


def _load(client: Client, name: str, **extra: object) -> object:
    res = client.post("/api/load", data=json.dumps({"model": name, **extra}), content_type="application/json")
    assert res.status_code == 202, res.content
    return wait_finished(res.json()["job"]["id"], timeout=90)


def _tensors(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    out: dict[str, object] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _logits(model: object, tokenizer: object) -> object:
    import torch

    ids = tokenizer("MACtuner loads models", return_tensors="pt")["input_ids"]  # type: ignore[operator]
    with torch.no_grad():
        return model(input_ids=ids).logits  # type: ignore[operator]


def test_the_list_shows_runs_with_steps_and_adapters_with_their_base(client: Client, tuned_root: Path) -> None:
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    ckpt = models["run/checkpoint-500"]
    assert ckpt["kind"] == "checkpoint" and ckpt["step"] == 500 and ckpt["problem"] is None
    model_bytes = sum(f.stat().st_size for f in (tuned_root / "models/run/checkpoint-500").glob("*.safetensors"))
    assert ckpt["size_bytes"] == model_bytes and ckpt["shards"] == 2  # optimizer & co. are not the model
    assert models["run/checkpoint-1000"]["step"] == 1000
    lora = models["lora"]
    assert lora["kind"] == "adapter" and lora["problem"] is None and lora["architecture"] == "LlamaForCausalLM"
    assert lora["adapter"] == {"type": "LORA", "rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                               "base": "tiny", "task_type": "CAUSAL_LM"}  # fmt: skip
    assert models["lora-cached"]["problem"] is None and models["lora-abs"]["problem"] is None
    assert "nobody/missing-model" in models["lora-missing"]["problem"]


def test_trainer_step_comes_from_trainer_state(client: Client, tuned_root: Path) -> None:
    state = tuned_root / "models/run/checkpoint-500/trainer_state.json"
    original = state.read_text()
    state.write_text(json.dumps({**json.loads(original), "global_step": 497}))
    try:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models["run/checkpoint-500"]["step"] == 497
    finally:
        state.write_text(original)


def test_trainer_checkpoint_loads_without_opening_optimizer_scheduler_or_rng(
    client: Client, tuned_root: Path, tmp_path: Path, settings: object
) -> None:
    run = tmp_path / "models" / "run"
    shutil.copytree(tuned_root / "models/run/checkpoint-500", run / "checkpoint-500")
    for name in layouts.TRAINER_STATE_FILES:  # opening a FIFO for reading blocks until a writer comes
        (run / "checkpoint-500" / name).unlink()
        os.mkfifo(run / "checkpoint-500" / name)
    settings.MACTUNER_MODELS_DIR = tmp_path / "models"  # type: ignore[attr-defined]
    job = _load(client, "run/checkpoint-500")
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    header_bytes = job.metadata["parameters"] * 2  # bfloat16 weights, untied
    assert job.detail["bytes_total"] == header_bytes == job.detail["bytes_done"]
    assert client.get("/api/status").json()["loaded"]["name"] == "run/checkpoint-500"


def test_lora_adapter_loads_over_its_base_like_peft_does(client: Client, tuned_root: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = _load(client, "lora", dtype="float32")
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    adapter = job.metadata["adapter"]
    assert adapter["type"] == "LORA" and adapter["rank"] == 4 and adapter["alpha"] == 8 and not adapter["merged"]
    assert adapter["target_modules"] == ["q_proj", "v_proj"] and adapter["base"] == "tiny"
    adapter_bytes = (tuned_root / "models/lora/adapter_model.safetensors").stat().st_size
    assert 0 < adapter["bytes"] < adapter_bytes
    base_bytes = sum(t.numel() * t.element_size() for t in _tensors(tuned_root / "models/tiny").values())
    assert job.detail["bytes_done"] == job.detail["bytes_total"] == base_bytes + adapter["bytes"]
    assert client.get("/api/status").json()["loaded"]["name"] == "lora"
    loaded = load_in_process(tuned_root / "models/lora", dtype="float32")
    assert type(loaded.model).__name__ == "PeftModelForCausalLM"
    base = AutoModelForCausalLM.from_pretrained(str(tuned_root / "models/tiny"), dtype=torch.float32)
    plain = _logits(base, loaded.tokenizer)
    reference = PeftModel.from_pretrained(base, str(tuned_root / "models/lora"))
    ours = _logits(loaded.model, loaded.tokenizer)
    assert torch.allclose(ours, _logits(reference, loaded.tokenizer), atol=1e-5)  # type: ignore[arg-type]
    assert not torch.allclose(ours, plain, atol=1e-3)  # type: ignore[arg-type] - the adapter changed the model


def test_merge_folds_the_adapter_into_the_base(client: Client, tuned_root: Path) -> None:
    import torch

    job = _load(client, "lora", dtype="float32")
    assert job.state == "succeeded"
    loaded = load_in_process(tuned_root / "models/lora", dtype="float32")
    unmerged = _logits(loaded.model, loaded.tokenizer)
    job = _load(client, "lora", dtype="float32", merge=True)
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    assert job.merge and job.metadata["adapter"]["merged"] and job.metadata["model_class"] == "LlamaForCausalLM"
    loaded = load_in_process(tuned_root / "models/lora", dtype="float32", merge=True)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert torch.allclose(_logits(loaded.model, loaded.tokenizer), unmerged, atol=1e-4)  # type: ignore[arg-type]


def test_the_merge_says_so_and_shows_no_time_left_while_it_runs(tuned_root: Path) -> None:
    """All bytes are read before the merge: the bar must not sit at 85 % saying "0 s remaining"."""
    import threading

    from loader.catalog.listing import resolve_base
    from loader.pipeline import LoadRequest, ModelSlot

    events: list[Any] = []
    request = LoadRequest(
        tuned_root / "models/lora", "cpu", "float32", name="lora", merge=True, base_resolver=resolve_base
    )
    ModelSlot().load(request, events.append, threading.Event())
    merging = [e for e in events if e.message == "어댑터를 기본 모델에 병합 중..."]
    assert merging and all(e.stage.value == "weights" and e.detail.eta_s is None for e in merging), merging
    after = events[events.index(merging[0]) :]
    assert [e.stage.value for e in after if e.stage.value != "weights"][0] == "device", "merged, then moved"
    unmerged: list[Any] = []
    ModelSlot().load(
        LoadRequest(tuned_root / "models/lora", "cpu", "float32", name="lora", base_resolver=resolve_base),
        unmerged.append,
        threading.Event(),
    )
    assert not [e for e in unmerged if "병합" in e.message], "no merge, no merge step"


def test_merge_must_be_a_boolean(client: Client) -> None:
    res = client.post("/api/load", data=json.dumps({"model": "lora", "merge": "yes"}), content_type="application/json")
    assert res.status_code == 400 and "merge" in res.json()["error"]
    assert client.get("/api/jobs").json()["jobs"] == []


@pytest.mark.parametrize("name", ["lora-cached", "lora-abs", "ia3"])
def test_adapter_bases_resolve_from_the_hf_cache_and_absolute_paths(client: Client, name: str) -> None:
    job = _load(client, name)
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    assert job.metadata["adapter"]["type"] == ("IA3" if name == "ia3" else "LORA")


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("lora-missing", "adapter_base_missing", "nobody/missing-model"),
        ("lora-wrong-base", "adapter_mismatch", "narrow"),
        ("lora-untargeted", "adapter_mismatch", "q_proj"),
    ],
)
def test_adapter_refusals_are_typed_and_keep_the_loaded_model(client: Client, name: str, code: str, words: str) -> None:
    assert _load(client, "tiny").state == "succeeded"
    job = _load(client, name)
    assert job.state == "failed" and job.error_code == code, (job.error_code, job.error_detail)
    assert words in job.error_message + job.error_detail
    assert client.get("/api/status").json()["loaded"]["name"] == "tiny"  # refused before the unload
    assert _load(client, "lora").state == "succeeded"


def test_loadmodel_merges_an_adapter_and_lists_steps_and_problems(tuned_root: Path, tmp_path: Path) -> None:
    env = server_env(tuned_root / "models", tmp_path / "cli.sqlite3", HF_HUB_CACHE=str(tuned_root / "hub"))
    migrate(env)
    listed = subprocess.run([PYTHON, "manage.py", "loadmodel", "--list"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    lines = {line.split("\t")[0]: line for line in listed.stdout.splitlines()}
    assert "step 500" in lines["run/checkpoint-500"] and "LORA r=4 base=tiny" in lines["lora"]
    assert "nobody/missing-model" in lines["lora-missing"]
    result = subprocess.run([PYTHON, "manage.py", "loadmodel", "lora", "--merge", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    assert snapshot["metadata"]["adapter"]["merged"] and snapshot["model"] == "lora"
    missing = subprocess.run([PYTHON, "manage.py", "loadmodel", "lora-missing"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 1 and "nobody/missing-model" in missing.stderr


def test_a_target_pattern_is_handed_to_peft_as_the_names_it_matches(tuned_root: Path, tmp_path: Path) -> None:
    """peft matches a string ``target_modules`` with ``re``, unbounded; ours (``regex`` with a timeout)
    chooses the modules and peft gets their names: the same adapter, no unbounded match in the host."""
    import torch

    folder = tmp_path / "lora-pattern"
    shutil.copytree(tuned_root / "models/lora", folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["target_modules"] = r".*\.(q_proj|v_proj)"
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    listed = load_in_process(tuned_root / "models/lora", dtype="float32")
    patterned = load_in_process(folder, dtype="float32")
    tokens = listed.tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(listed.model(**tokens).logits, patterned.model(**tokens).logits)
    targets = patterned.model.peft_config["default"].target_modules
    assert targets and all(name.endswith(("q_proj", "v_proj")) for name in targets)
