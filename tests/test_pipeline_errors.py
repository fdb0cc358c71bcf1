"""Every broken checkpoint yields its typed error, keeps the loaded model, and the next load works."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from loader.pipeline import LoadError, LoadRequest, ModelSlot

Damage = Callable[[Path], None]


def _config(path: Path, **changes: object) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def _first_shard(path: Path) -> Path:
    return sorted(path.glob("*.safetensors"))[0]


def _truncate(path: Path) -> None:
    shard = _first_shard(path)
    with shard.open("r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)


def _garbage_header(path: Path) -> None:
    shard = _first_shard(path)
    data = bytearray(shard.read_bytes())
    data[8:64] = b"\xff" * 56
    shard.write_bytes(bytes(data))


DAMAGES: dict[str, tuple[Damage, str]] = {
    "folder missing": (lambda p: shutil.rmtree(p), "folder_missing"),
    "no config.json": (lambda p: (p / "config.json").unlink(), "not_a_model_folder"),
    "config.json is not JSON": (lambda p: (p / "config.json").write_text("{not json"), "config_unreadable"),
    "unknown model_type": (
        lambda p: _config(p, model_type="no-such-model", architectures=["NoSuchForCausalLM"]),
        "unknown_architecture",
    ),
    "config without model_type": (lambda p: (p / "config.json").write_text("{}"), "config_unreadable"),
    "config value of the wrong type": (lambda p: _config(p, num_hidden_layers="two"), "config_unreadable"),
    "auto_map needs remote code": (
        lambda p: _config(p, auto_map={"AutoModelForCausalLM": "modeling_x.X"}),
        "remote_code_refused",
    ),
    "tokenizer is garbage": (lambda p: (p / "tokenizer.json").write_text("garbage{"), "tokenizer_error"),
    "tokenizer missing": (
        lambda p: [(p / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
        "tokenizer_error",
    ),
    "index names a missing shard": (lambda p: _first_shard(p).unlink(), "shard_missing"),
    "truncated shard": (_truncate, "shard_corrupt"),
    "shard header is garbage": (_garbage_header, "shard_corrupt"),
    "quantized with a backend that is not installed": (
        lambda p: _config(p, quantization_config={"quant_method": "gptq", "bits": 4, "group_size": 128}),
        "missing_package",
    ),
    "no weights at all": (lambda p: [f.unlink() for f in p.glob("*.safetensors*")], "not_a_model_folder"),
}


@pytest.fixture(scope="module")
def slot(models_root: Path) -> ModelSlot:
    slot = ModelSlot()
    slot.load(LoadRequest(models_root / "tied"), lambda e: None, threading.Event())
    return slot


@pytest.mark.parametrize("case", list(DAMAGES))
def test_broken_checkpoint_gives_typed_error_and_keeps_current_model(
    case: str, broken: Path, slot: ModelSlot, models_root: Path
) -> None:
    damage, code = DAMAGES[case]
    damage(broken)
    with pytest.raises(LoadError) as info:
        slot.load(LoadRequest(broken), lambda e: None, threading.Event())
    assert info.value.code == code, info.value.detail
    assert info.value.user_message and info.value.detail
    assert not slot.busy
    if slot.loaded is None:  # errors found only after the unload leave the slot empty...
        slot.load(LoadRequest(models_root / "tied"), lambda e: None, threading.Event())
    assert slot.loaded is not None and slot.loaded.name == "tied"  # ...and the next load works


def test_preflight_errors_happen_before_unloading(broken: Path, slot: ModelSlot) -> None:
    _truncate(broken)
    before = slot.loaded
    with pytest.raises(LoadError):
        slot.load(LoadRequest(broken), lambda e: None, threading.Event())
    assert slot.loaded is before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder(broken: Path, slot: ModelSlot) -> None:
    broken.chmod(0)
    with pytest.raises(LoadError) as info:
        slot.load(LoadRequest(broken), lambda e: None, threading.Event())
    assert info.value.code == "folder_unreadable"


def test_model_that_cannot_fit_is_refused_and_current_model_stays(models_root: Path, slot: ModelSlot) -> None:
    before = slot.loaded
    with pytest.raises(LoadError) as info:
        slot.load(LoadRequest(models_root / "medium"), lambda e: None, threading.Event(), max_bytes=10_000_000)
    assert info.value.code == "does_not_fit"
    assert "필요" in info.value.user_message and "GB" in info.value.user_message
    assert slot.loaded is before


@pytest.mark.parametrize(
    ("device", "dtype", "code"), [("tpu", "auto", "invalid_option"), ("cpu", "int3", "invalid_option")]
)
def test_bad_options_are_refused(device: str, dtype: str, code: str, models_root: Path, slot: ModelSlot) -> None:
    with pytest.raises(LoadError) as info:
        slot.load(LoadRequest(models_root / "tiny", device=device, dtype=dtype), lambda e: None, threading.Event())
    assert info.value.code == code


def test_unavailable_device_is_a_clear_error(models_root: Path, slot: ModelSlot) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(LoadError) as info:
        slot.load(LoadRequest(models_root / "tiny", device="cuda"), lambda e: None, threading.Event())
    assert info.value.code == "device_unavailable" and "CUDA" in info.value.user_message
