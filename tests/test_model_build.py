"""How the stages build the model: transformers' own class, the config parsed once, the tensor loop inline."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from loader.pipeline import LoadRequest, ModelSlot


@pytest.mark.parametrize("engine", ["stream", "transformers"])
def test_the_loaded_model_is_transformers_own_class(
    models_root: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """No subclass made at load time: ``type(model)``, pickling and ``save_pretrained`` see the real class."""
    import transformers

    if engine == "transformers":
        monkeypatch.setenv("MACTUNER_ENGINE", "transformers")
    loaded = ModelSlot().load(LoadRequest(models_root / "tiny", device="cpu"), lambda _e: None, threading.Event())
    assert type(loaded.model) is transformers.LlamaForCausalLM
    assert loaded.metadata["engine"] == engine
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())


@pytest.mark.parametrize("engine", ["stream", "transformers"])
def test_a_load_parses_the_config_once(models_root: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    """The preflight's parse serves the skeleton, the tokenizer's class choice and the model."""
    import transformers

    if engine == "transformers":
        monkeypatch.setenv("MACTUNER_ENGINE", "transformers")
    parses = [0]
    real = transformers.AutoConfig.from_pretrained.__func__

    def counted(cls: Any, *args: Any, **kwargs: Any) -> Any:
        parses[0] += 1
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(counted))
    loaded = ModelSlot().load(LoadRequest(models_root / "tiny", device="cpu"), lambda _e: None, threading.Event())
    assert parses[0] == 1
    assert loaded.tokenizer.encode("hello") == transformers.AutoTokenizer.from_pretrained(
        str(models_root / "tiny")
    ).encode("hello")


def count_tensor_pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many thread pools transformers' per-tensor loop opens."""
    from concurrent.futures import ThreadPoolExecutor

    import transformers.core_model_loading as cml

    opened = [0]

    class Counted(ThreadPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            opened[0] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cml, "ThreadPoolExecutor", Counted)
    return opened


@pytest.mark.parametrize(("dtype", "pools"), [("auto", 0), ("float32", 1)])
def test_the_tensor_loop_runs_inline_unless_it_converts(
    models_root: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, pools: int
) -> None:
    """Streamed tensors are already read: a pool of no-op jobs is only GIL hand-offs. A CPU dtype
    conversion keeps transformers' pool (its jobs read and convert in parallel)."""
    import os

    monkeypatch.delenv("HF_DEACTIVATE_ASYNC_LOAD", raising=False)
    opened = count_tensor_pools(monkeypatch)
    loaded = ModelSlot().load(
        LoadRequest(models_root / "tiny", device="cpu", dtype=dtype), lambda _e: None, threading.Event()
    )
    assert loaded.metadata["engine"] == "stream"
    assert opened[0] == pools
    assert "HF_DEACTIVATE_ASYNC_LOAD" not in os.environ  # transformers' switch is ours only during the call


def test_a_users_own_async_switch_is_left_alone(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("HF_DEACTIVATE_ASYNC_LOAD", "0")
    opened = count_tensor_pools(monkeypatch)
    ModelSlot().load(LoadRequest(models_root / "tiny", device="cpu"), lambda _e: None, threading.Event())
    assert opened[0] == 1 and os.environ["HF_DEACTIVATE_ASYNC_LOAD"] == "0"
