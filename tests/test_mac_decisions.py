"""The Mac path's decisions, tested on Linux with stand-ins for ``torch.backends.mps``, ``torch.mps``
and ``platform.mac_ver`` (named ``stand_in_*`` below). They prove the decisions, not a Mac: what
only a run on a Mac can confirm is listed in the README's Mac section."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from loader.pipeline import device as devices
from loader.pipeline.errors import DeviceUnavailable, InvalidOption, LoadError
from loader.pipeline.request import LoadRequest


@pytest.fixture
def stand_in_mac(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Mac of the given macOS version and chip, with or without MPS, and a stand-in torch.mps."""
    import torch

    calls: list[str] = []

    def make(
        version: str = "15.1", machine: str = "arm64", mps: bool = True, limit: int = 0, used: int = 0
    ) -> list[str]:
        monkeypatch.setattr(sys, "platform", "darwin")
        monkeypatch.setattr(devices.platform, "mac_ver", lambda: (version, ("", "", ""), machine))
        monkeypatch.setattr(devices.platform, "machine", lambda: machine)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: limit, raising=False)
        monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: used, raising=False)
        monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("empty_cache"), raising=False)
        monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("synchronize"), raising=False)
        return calls

    return make


def test_stand_in_macos_13_says_why_mps_is_missing(stand_in_mac: Any) -> None:
    stand_in_mac(version="13.6", mps=False)
    with pytest.raises(DeviceUnavailable) as caught:
        devices.resolve_device("mps")
    assert "macOS 13.6" in caught.value.user_message and "14" in caught.value.user_message
    assert devices.resolve_device("auto") == "cpu"


def test_stand_in_intel_mac_is_named(stand_in_mac: Any) -> None:
    stand_in_mac(version="14.5", machine="x86_64", mps=False)
    with pytest.raises(DeviceUnavailable) as caught:
        devices.resolve_device("mps")
    assert "Intel" in caught.value.user_message


def test_stand_in_mps_fit_takes_the_smaller_of_metal_share_and_system_memory(
    stand_in_mac: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_mac(limit=20 << 30, used=2 << 30)
    monkeypatch.setattr(devices, "_system_available", lambda: 6 << 30)  # a browser and an IDE hold the rest
    assert devices.available_bytes("mps") == 6 << 30
    monkeypatch.setattr(devices, "_system_available", lambda: 40 << 30)
    assert devices.available_bytes("mps") == 18 << 30


@pytest.mark.parametrize(
    ("version", "requested", "planned", "config", "expected", "noted"),
    [
        ("15.1", "auto", "bfloat16", "bfloat16", "bfloat16", False),
        ("15.1", "auto", "float32", "float64", "float32", True),  # MPS holds no float64
        ("13.6", "auto", "bfloat16", "bfloat16", "float32", True),  # no bf16 on MPS before macOS 14
        ("15.1", "float16", "bfloat16", "bfloat16", "float16", False),
    ],
)
def test_stand_in_mps_dtype_decisions(
    stand_in_mac: Any, version: str, requested: str, planned: str, config: str, expected: str, noted: bool
) -> None:
    stand_in_mac(version=version)
    dtype, note = devices.mps_dtype(requested, planned, config)
    assert dtype == expected and (note is not None) == noted


def test_stand_in_bfloat16_asked_on_macos_13_is_refused(stand_in_mac: Any) -> None:
    stand_in_mac(version="13.6")
    with pytest.raises(InvalidOption):
        devices.mps_dtype("bfloat16", "bfloat16", "bfloat16")


def test_stand_in_the_mps_cache_is_emptied_after_a_load(stand_in_mac: Any) -> None:
    calls = stand_in_mac()
    devices.after_load("mps")
    assert calls == ["synchronize", "empty_cache"], "copies finished, temporaries returned before 100 %"


def test_stand_in_mps_loads_with_the_serial_tensor_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers #48029: MPS + the 4-thread loader segfaults or hangs; the switch is on for the call only."""
    from loader.pipeline.weights import fallback

    seen: list[str | None] = []

    class StandInModel:
        @classmethod
        def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
            seen.append(os.environ.get("HF_DEACTIVATE_ASYNC_LOAD"))
            raise RuntimeError("stand-in: stop after the call")

    monkeypatch.delenv("HF_DEACTIVATE_ASYNC_LOAD", raising=False)
    info: Any = type("Info", (), {"shard_files": [], "total_bytes": 1, "tensors": {}})()
    request = LoadRequest(Path("/nowhere"), "mps", "float16")
    for target in ("mps", "cpu"):
        with pytest.raises(RuntimeError):
            fallback.load_observed(
                info, request, StandInModel, "float16", target, False, devices_detail(), lambda f: None,
                threading.Event(), lambda hook: None,
            )  # fmt: skip
    assert seen == ["1", None] and "HF_DEACTIVATE_ASYNC_LOAD" not in os.environ


def devices_detail() -> Any:
    from loader.pipeline.events import WeightsDetail

    return WeightsDetail()


def test_an_untyped_failure_frees_memory_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, models_root: Path
) -> None:
    from loader.pipeline import slot as slot_module

    freed: list[bool] = []
    monkeypatch.setattr(slot_module.devices, "release_memory", lambda collect=True: freed.append(True))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("stand-in: Trying to convert Float64 to the MPS backend")

    monkeypatch.setattr(slot_module, "load_checkpoint", broken)
    with pytest.raises(slot_module.UnexpectedFailure) as caught:
        slot_module.ModelSlot().load(LoadRequest(models_root / "tiny", "cpu"), lambda e: None, threading.Event())
    assert freed and "TypeError" in str(caught.value) and not isinstance(caught.value, LoadError)
