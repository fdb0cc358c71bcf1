"""Hostile checkpoints, second round: one bad folder never breaks the list, every list problem is
said in the viewer's language, an extra tensor is ignored and named (as transformers does), and
the web reads an adapter's base only inside its roots. Each case ends with the next load working."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.pipeline.i18n import Msg
from mactuner_dev import layouts

from .conftest import load_in_process, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _load(client: Client, name: str, **extra: object) -> Any:
    res = client.post("/api/load", data=json.dumps({"model": name, **extra}), content_type="application/json")
    assert res.status_code == 202, res.content
    return wait_finished(res.json()["job"]["id"], timeout=90)


def _models(client: Client, lang: str = "ko") -> dict[str, dict[str, Any]]:
    res = client.get("/api/models", HTTP_ACCEPT_LANGUAGE=lang)
    assert res.status_code == 200
    json.loads(res.content)  # strict JSON
    return {m["name"]: m for m in res.json()["models"]}


def _add_tensor(folder: Path, name: str) -> None:
    """``name`` (4 F32 values) appended to the first shard and to the index, as a conversion leaves it."""
    shard = sorted(folder.glob("*.safetensors"))[0]
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    header[name] = {"dtype": "F32", "shape": [4], "data_offsets": [len(data), len(data) + 16]}
    text = json.dumps(header).encode()
    shard.write_bytes(struct.pack("<Q", len(text)) + text + data + struct.pack("<4f", 1, 2, 3, 4))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"][name] = shard.name
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.fixture
def root(tmp_path: Path, models_root: Path, settings: Any) -> Path:
    models = tmp_path / "models"
    shutil.copytree(models_root / "tiny", models / "tiny")
    settings.MACTUNER_MODELS_DIR = models
    settings.MACTUNER_HF_CACHE = tmp_path / "hub"
    settings.MACTUNER_BASE_DIRS = []
    MODEL_HOST.unload()
    return models


def test_one_unexpected_tensor_is_ignored_named_and_the_rest_equals_plain_transformers(
    client: Client, root: Path
) -> None:
    extra = root / "extra-head"
    shutil.copytree(root / "tiny", extra)
    _add_tensor(extra, "model.extra_head.weight")
    job = _load(client, "extra-head", dtype="float32")
    assert job.state == "succeeded", job.error_message
    assert job.metadata["ignored_tensors"] == {"count": 1, "names": ["model.extra_head.weight"]}
    note = job.metadata["notes"][-1]
    assert "model.extra_head.weight" in note["text"] and note["template"] != note["text"]
    status = client.get("/api/status", HTTP_ACCEPT_LANGUAGE="en").json()
    assert status["loaded"]["metadata"]["ignored_tensors"]["count"] == 1

    import torch
    from transformers import AutoModelForCausalLM

    ours = load_in_process(extra, dtype="float32").model
    plain = AutoModelForCausalLM.from_pretrained(str(extra), dtype=torch.float32)
    mine, theirs = ours.state_dict(), plain.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_a_cache_repo_whose_snapshots_link_to_each_other_hides_nothing_else(
    client: Client, root: Path, models_root: Path
) -> None:
    hub = root.parent / "hub"
    layouts.write_hf_cache(hub, "acme/good", models_root / "tiny")
    loop = hub / "models--evil--loop"
    (loop / "snapshots").mkdir(parents=True)
    (loop / "refs").mkdir()
    os.symlink("b", loop / "snapshots" / "a")
    os.symlink("a", loop / "snapshots" / "b")
    (loop / "refs" / "main").write_text("a")
    for lang in ("ko", "en"):
        models = _models(client, lang)
        assert models["acme/good"]["problem"] is None, models["acme/good"]
        assert models["evil/loop"]["problem"], models.keys()
        assert bool(HANGUL.search(models["evil/loop"]["problem"])) is (lang == "ko")
        assert models["tiny"]["problem"] is None
    job = _load(client, "evil/loop")
    assert job.state == "failed" and job.error_code != "internal", (job.error_code, job.error_detail)
    assert _load(client, "acme/good").state == "succeeded"


def test_folders_that_cannot_be_offered_are_listed_with_why(client: Client, root: Path) -> None:
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("my experiments")
    for lang in ("ko", "en"):
        models = _models(client, lang)
        for name in ("empty", "notes"):
            problem = models[name]["problem"]
            assert problem and bool(HANGUL.search(problem)) is (lang == "ko"), (name, problem)
        assert "config.json" in models["notes"]["problem"]
    for name in ("empty", "notes"):
        job = _load(client, name)
        assert job.state == "failed" and job.error_code == "not_a_model_folder", (job.error_code, job.error_detail)
    assert _load(client, "tiny").state == "succeeded"


def _hostile_zoo(root: Path, outside: Path) -> None:
    """One folder per problem the list can report, each in a copy of ``tiny``."""

    def copy(name: str) -> Path:
        shutil.copytree(root / "tiny", root / name)
        return root / name

    def edit(name: str, **changes: Any) -> None:
        folder = copy(name)
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))

    fifo = copy("fifo-config")
    (fifo / "config.json").unlink()
    os.mkfifo(fifo / "config.json")
    edit("int-dtype", torch_dtype="int8")
    edit("bad-archs", architectures="LlamaForCausalLM")
    edit("bad-type", model_type=7)
    link = copy("link-out")
    (link / "config.json").unlink()
    (link / "config.json").symlink_to(outside)
    (copy("not-json") / "config.json").write_text("{nope")
    (copy("list-json") / "config.json").write_text("[1, 2]")
    (copy("nan-json") / "config.json").write_text('{"model_type": "llama", "x": NaN}')
    (copy("huge-json") / "config.json").write_text('{"a": "' + "x" * (17 << 20) + '"}')
    no_weights = copy("no-weights")
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    layouts.write_gguf(root / "q4" / "model.gguf")
    layouts.write_lora(root / "lora-lost", root / "tiny", "nobody/missing")
    layouts.write_lora(root / "lora-outside", root / "tiny", str(outside.parent / "elsewhere"))
    shutil.copytree(root / "tiny", outside.parent / "elsewhere")
    (root / "empty").mkdir()


def test_every_list_problem_is_said_in_english_to_an_english_viewer(client: Client, root: Path) -> None:
    outside = root.parent / "outside" / "secret.json"
    outside.parent.mkdir()
    outside.write_text('{"model_type": "llama"}')
    _hostile_zoo(root, outside)
    from loader.catalog.listing import describe_all

    described = {m["name"]: m for m in describe_all()}
    problems = {n: m["problem"] for n, m in described.items() if m["problem"]}
    zoo = {"fifo-config", "int-dtype", "bad-archs", "bad-type", "link-out", "not-json", "list-json", "nan-json",
           "huge-json", "no-weights", "q4", "lora-lost", "lora-outside", "empty"}  # fmt: skip
    assert set(problems) == zoo, set(problems) ^ zoo
    # Every problem keeps its template: the surfaces can say it in any language.
    assert all(isinstance(p, Msg) for p in problems.values()), [
        n for n, p in problems.items() if not isinstance(p, Msg)
    ]
    english = _models(client, "en")
    korean = [f"{n}: {english[n]['problem']}" for n in problems if HANGUL.search(english[n]["problem"])]
    assert not korean, korean
    assert "MACTUNER_BASE_DIRS" in english["lora-outside"]["problem"]


def test_the_web_refuses_an_adapter_base_outside_its_roots_and_a_setting_admits_it(
    client: Client, root: Path, settings: Any
) -> None:
    elsewhere = root.parent / "elsewhere" / "base"
    shutil.copytree(root / "tiny", elsewhere)
    layouts.write_lora(root / "lora-out", root / "tiny", str(elsewhere))
    job = _load(client, "lora-out")
    assert job.state == "failed" and job.error_code == "adapter_base_outside", (job.error_code, job.error_detail)
    en = client.get("/api/status", HTTP_ACCEPT_LANGUAGE="en").json()["job"]["error"]["text"]["en"]
    assert "MACTUNER_BASE_DIRS" in en and not HANGUL.search(en), en
    settings.MACTUNER_BASE_DIRS = [elsewhere.parent]
    job = _load(client, "lora-out")
    assert job.state == "succeeded", (job.error_code, job.error_detail)
    assert job.metadata["adapter"]["base"] == str(elsewhere)


@pytest.mark.parametrize(
    ("edit", "code", "words"),
    [
        ({"r": 10**9}, "adapter_mismatch", "r=1000000000"),
        ({"r": "4"}, "config_unreadable", "'4'"),
        ({"r": -1}, "config_unreadable", "-1"),
        ({"lora_alpha": 1e308}, "config_unreadable", "lora_alpha"),
        ({"lora_alpha": "x"}, "config_unreadable", "lora_alpha"),
        ({"rank_pattern": {"q_proj": 10**6}}, "adapter_mismatch", "rank_pattern"),
    ],
)
def test_adapter_numbers_peft_cannot_use_are_refused_in_words_before_the_unload(
    root: Path, edit: dict[str, Any], code: str, words: str
) -> None:
    import threading

    from loader.pipeline import LoadError, LoadRequest, ModelSlot

    layouts.write_lora(root / "odd", root / "tiny", str(root / "tiny"))
    config = json.loads((root / "odd" / "adapter_config.json").read_text())
    (root / "odd" / "adapter_config.json").write_text(json.dumps(config | edit))
    slot = ModelSlot()
    slot.load(LoadRequest(root / "tiny"), lambda e: None, threading.Event())
    with pytest.raises(LoadError) as refused:
        slot.load(LoadRequest(root / "odd"), lambda e: None, threading.Event())
    assert refused.value.code == code and words in refused.value.user_message, refused.value.to_dict()
    assert "Error" not in refused.value.user_message  # words, not an exception's class name
    assert slot.loaded is not None and slot.loaded.name == "tiny"  # refused in the preflight: the model stays


def test_a_quantized_checkpoint_without_its_package_names_the_package(root: Path) -> None:
    from loader.pipeline import LoadError
    from loader.pipeline.inspect.formats import _installed

    if _installed("bitsandbytes"):
        pytest.skip("bitsandbytes is installed here")
    shutil.copytree(root / "tiny", root / "bnb")
    config = json.loads((root / "bnb" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (root / "bnb" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError) as refused:
        load_in_process(root / "bnb")
    assert refused.value.code == "missing_package"
    assert "pip install bitsandbytes" in refused.value.user_message and "transformers" not in refused.value.user_message


def test_the_terminal_reads_a_base_anywhere_names_ignored_tensors_and_tries_the_model(
    root: Path, tmp_path: Path
) -> None:
    """``loadmodel`` is the user's own shell: an adapter's base outside the models folder loads,
    the tensors its model had no place for are named after the success line, and ``--try`` streams
    an answer (to stderr beside ``--json``), then its speed; the JSON carries the try."""
    import subprocess

    from .conftest import PYTHON, ROOT, migrate, server_env

    elsewhere = tmp_path / "elsewhere" / "base"
    shutil.copytree(root / "tiny", elsewhere)
    _add_tensor(elsewhere, "model.extra_head.weight")
    layouts.write_lora(root / "lora-out", root / "tiny", str(elsewhere))
    env = server_env(root, tmp_path / "cli.sqlite3") | {"LANG": "en_US.UTF-8", "LC_ALL": ""}
    migrate(env)
    run = subprocess.run(
        [PYTHON, "manage.py", "loadmodel", "lora-out", "--json", "--try", "MACtuner loads models",
         "--max-new-tokens", "6"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    snapshot = json.loads(run.stdout)
    assert snapshot["metadata"]["adapter"]["base"] == str(elsewhere)
    assert snapshot["metadata"]["ignored_tensors"]["names"] == ["model.extra_head.weight"]
    assert "model.extra_head.weight" in snapshot["notes"][-1]["en"]
    note = next(line for line in run.stderr.splitlines() if line.startswith("ℹ"))
    assert "model.extra_head.weight" in note and "not loaded" in note and not HANGUL.search(note), run.stderr
    tried = snapshot["try"]
    from loader.management.trying import terminal_text

    assert tried["state"] == "done" and 1 <= tried["tokens"] <= 6 and terminal_text(tried["text"]) in run.stderr
    assert snapshot["command_s"] >= tried["after_enter_s"] > tried["first_token_s"] > 0
    assert snapshot["wall_s"] is not None and snapshot["first_token_s"] is None  # the row was read before the try
    speed = run.stderr.strip().splitlines()[-1]
    assert "tokens/s" in speed and "after Enter" in speed and not HANGUL.search(speed), run.stderr
