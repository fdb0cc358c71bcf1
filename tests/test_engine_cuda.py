"""The engine's CUDA path (pinned staging ring, side-stream copies) against plain transformers.

Skipped without a CUDA GPU; bench/device_run.sh runs it on the lent GPU machine.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

from loader.pipeline import LoadCancelled, LoadRequest, ModelSlot, ProgressEvent, Stage
from loader.pipeline.errors import ShardCorrupt
from mactuner_dev.synth import write_checkpoint

from .test_engine import cancel_at_first_bytes

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def load_cuda(path: Path, **kw: object) -> tuple[ModelSlot, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    slot = ModelSlot()
    slot.load(LoadRequest(path, device="cuda", **kw), events.append, threading.Event())
    return slot, events


def gpu_bytes_after_free() -> int:
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated()


@pytest.mark.parametrize(("name", "dtype", "engine"), [("tiny", "auto", "stream"), ("tied", "auto", "stream"),
                                                       ("tiny", "float16", "transformers")])  # fmt: skip
def test_cuda_tensors_equal_plain_from_pretrained(models_root: Path, name: str, dtype: str, engine: str) -> None:
    import transformers

    path = models_root / name
    slot, events = load_cuda(path, dtype=dtype)
    detail = [e for e in events if e.stage is Stage.WEIGHTS][-1].detail
    assert detail.engine == engine
    if engine == "stream":
        assert 0 < detail.staging_bytes <= 600e6
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), dtype="auto" if dtype == "auto" else getattr(torch, dtype), device_map="cuda"
    )
    mine, theirs = slot.loaded.model.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert mine[key].device.type == "cuda" and torch.equal(mine[key], tensor), key
    del ref, mine, theirs, tensor
    slot.unload()
    assert gpu_bytes_after_free() < 16 << 20


def test_cuda_cancel_mid_read_frees_gpu_and_pinned_memory(models_root: Path) -> None:
    cancel, asked, cancel_mid_read = cancel_at_first_bytes()
    slot = ModelSlot()
    with pytest.raises(LoadCancelled):
        slot.load(LoadRequest(models_root / "medium", device="cuda", read_limit_bps=40e6), cancel_mid_read, cancel)
    assert asked and time.monotonic() - asked[0] < 1.0
    assert slot.loaded is None and gpu_bytes_after_free() < 16 << 20
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is not None:
        assert stats().get("reserved_bytes.current", 0) < 16 << 20, "pinned staging not given back"


def test_cuda_truncated_shard_is_shard_corrupt_and_frees_the_gpu(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "cut", params=20_000_000, shards=2, seed=9)
    last = sorted(path.glob("*.safetensors"))[-1]

    def truncate(event: ProgressEvent) -> None:
        if event.stage is Stage.TOKENIZER and last.stat().st_size > 1000:
            os.truncate(last, last.stat().st_size // 2)

    slot = ModelSlot()
    with pytest.raises(ShardCorrupt):
        slot.load(LoadRequest(path, device="cuda", read_limit_bps=30e6), truncate, threading.Event())
    assert slot.loaded is None and gpu_bytes_after_free() < 16 << 20
