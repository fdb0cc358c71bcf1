"""The model is built once: from_pretrained adopts the preflight's skeleton, and only when it fits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from loader.pipeline import LoadRequest, ModelSlot
from loader.pipeline.resolve import preflight
from loader.pipeline.reuse import builder


def count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import transformers

    calls = [0]
    cls = transformers.LlamaForCausalLM
    real = cls.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counted)
    return calls


@pytest.mark.parametrize("engine", ["stream", "transformers"])
def test_a_load_builds_the_model_once(models_root: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    if engine == "transformers":
        monkeypatch.setenv("MACTUNER_ENGINE", "transformers")
    calls = count_builds(monkeypatch)
    slot = ModelSlot()
    loaded = slot.load(LoadRequest(models_root / "tiny", device="cpu"), lambda _e: None, threading.Event())
    assert calls[0] == 1  # the preflight's skeleton became the model
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and type(loaded.model).__module__.startswith(
        "transformers"
    )
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())


def test_a_skeleton_in_another_dtype_is_not_adopted(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    info = preflight(LoadRequest(models_root / "tiny", device="cpu"))  # a bfloat16 skeleton
    skeleton = info.skeleton
    assert skeleton is not None and skeleton.dtype == "bfloat16"
    calls = count_builds(monkeypatch)
    model = builder(skeleton.model_cls, skeleton).from_pretrained(str(models_root / "tiny"), dtype=torch.float32)
    assert calls[0] == 1  # built afresh in float32
    assert type(model) is skeleton.model_cls
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert skeleton.model is None  # offered once, then dropped
