"""CPU reads begin once the folder is checked, before the skeleton check, and never outlive a refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loader.pipeline import LoadRequest, ModelSlot
from loader.pipeline.errors import DoesNotFit, ShardMissing, WeightsMismatch
from loader.pipeline.inspect import skeleton as skeleton_module
from loader.pipeline.weights.cpu_stream import CpuStream
from mactuner_dev.harness import PYTHON, ROOT
from tests.test_engine import mapped_ranges, shard_fds, stream_threads


def reads_during_skeleton(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Chunks read so far, noted at the end of a (slowed) skeleton build."""
    reads, seen = [0], []
    real_read, real_build = CpuStream.read, skeleton_module.build_meta

    def read(self: CpuStream, *args: Any) -> None:
        real_read(self, *args)
        reads[0] += 1

    def build(*args: Any) -> Any:
        time.sleep(0.3)  # a slow skeleton check (a deep model): the reads go on meanwhile
        seen.append(reads[0])
        return real_build(*args)

    monkeypatch.setattr(CpuStream, "read", read)
    monkeypatch.setattr(skeleton_module, "build_meta", build)
    return seen


def test_reads_begin_before_the_skeleton_check_and_are_credited(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = reads_during_skeleton(monkeypatch)
    events = []
    slot = ModelSlot()
    slot.load(LoadRequest(models_root / "medium", device="cpu"), events.append, threading.Event())
    assert seen and seen[0] > 0  # bytes landed while the preflight was still checking
    first = next(e for e in events if e.stage.value == "weights")
    assert first.detail.prefetched_bytes > 0 and first.detail.engine == "stream"
    assert slot.loaded is not None and slot.loaded.metadata["engine"] == "stream"


@pytest.fixture
def mismatched(models_root: Path, tmp_path: Path) -> Path:
    """Headers fine, but config.json asks for a wider model than the shards hold."""
    path = tmp_path / "mismatched"
    shutil.copytree(models_root / "medium", path)
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = config["intermediate_size"] * 2
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_load_refused_after_the_reads_began_keeps_the_model_and_leaks_nothing(
    models_root: Path, mismatched: Path
) -> None:
    slot = ModelSlot()
    slot.load(LoadRequest(models_root / "tiny", device="cpu"), lambda _e: None, threading.Event())
    with pytest.raises(WeightsMismatch):
        slot.load(LoadRequest(mismatched, device="cpu"), lambda _e: None, threading.Event())
    with pytest.raises(DoesNotFit):
        slot.load(LoadRequest(models_root / "medium", device="cpu"), lambda _e: None, threading.Event(), max_bytes=1000)
    assert slot.loaded is not None and slot.loaded.path == models_root / "tiny"  # the refusals cost nothing
    assert not stream_threads()
    assert not shard_fds(mismatched) and not mapped_ranges(mismatched)
    assert not shard_fds(models_root / "medium") and not mapped_ranges(models_root / "medium")


def test_timings_say_how_long_the_request_waited_for_its_thread_and_its_first_byte(models_root: Path) -> None:
    asked = time.time() - 0.05  # as if the request had waited 50 ms before the load began
    slot = ModelSlot()
    loaded = slot.load(
        LoadRequest(models_root / "tiny", device="cpu", requested_at=asked), lambda _e: None, threading.Event()
    )
    timings = loaded.metadata["timings"]
    assert 0.05 <= timings["queued"] < timings["first_byte"] < time.time() - asked


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or any(map(os.path.exists, ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))),
    reason="'auto' means the CPU only on a Linux machine without a GPU",
)
def test_an_auto_load_during_the_start_up_import_does_not_wait_for_torch_to_read() -> None:
    code = (
        "import sys, threading, time\n"
        "from loader.pipeline.device import target_without_torch\n"
        "threading.Thread(target=lambda: __import__('torch'), daemon=True).start()\n"
        "while 'torch' not in sys.modules: time.sleep(0.001)\n"
        "device = target_without_torch('auto')\n"
        "print(device, sys.modules['torch'].__spec__._initializing)\n"
    )
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["cpu", "True"]  # answered while torch was still being imported elsewhere


def test_a_shard_swapped_for_a_fifo_after_the_checks_is_refused_in_plain_words_without_hanging(
    models_root: Path, tmp_path: Path
) -> None:
    from loader.pipeline.inspect.checkpoint import inspect_checkpoint
    from loader.pipeline.weights.engine import choose

    path = tmp_path / "swapped"
    shutil.copytree(models_root / "tiny", path)
    info = inspect_checkpoint(path)  # the preflight's checks pass on the real files
    shards = choose(info, "cpu", False, False).shards
    shards[0].path.unlink()
    os.mkfifo(shards[0].path)  # then the shard becomes a pipe nobody writes to
    stream = CpuStream(shards, threading.Event()).start(open_here=True)  # returns: the open does not block
    assert stream.finished.wait(5)
    assert isinstance(stream.error, ShardMissing) and "바뀌었습니다" in str(stream.error.template)
    stream.close()
    assert not shard_fds(path)
