"""The streaming weights engine against plain transformers, and its cancel/error promises (CPU)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loader.pipeline import LoadCancelled, LoadRequest, ModelSlot, ProgressEvent, Stage
from loader.pipeline.errors import ShardCorrupt, ShardMissing
from mactuner_dev.synth import train_tokenizer, write_checkpoint

ENGINES = ["stream", "transformers"]


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    write_checkpoint(root / "single", params=2_000_000, shards=1, seed=4)
    write_checkpoint(root / "f32", params=2_000_000, shards=2, dtype="float32", seed=5)
    write_checkpoint(root / "f16", params=2_000_000, shards=2, dtype="float16", seed=6)
    write_bert(root / "bert")
    return root


def write_bert(path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(512), unk_token="<unk>", pad_token="<pad>")
    tok.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    torch.manual_seed(0)
    BertModel(config).to(torch.bfloat16).save_pretrained(path)


def use_engine(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    if name == "transformers":
        monkeypatch.setenv("MACTUNER_ENGINE", "transformers")
    else:
        monkeypatch.delenv("MACTUNER_ENGINE", raising=False)


def load(path: Path, cancel: threading.Event | None = None, on_event=None, **kw: object):  # noqa: ANN001, ANN201
    events: list[ProgressEvent] = []

    def record(event: ProgressEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    slot = ModelSlot()
    slot.load(LoadRequest(path, device="cpu", **kw), record, cancel or threading.Event())
    return slot, events


def plain(path: Path, dtype: str):  # noqa: ANN201
    import transformers

    cls = transformers.BertModel if path.name == "bert" else transformers.AutoModelForCausalLM
    return cls.from_pretrained(str(path), dtype="auto" if dtype == "auto" else getattr(__import__("torch"), dtype))


CASES = [
    ("models_root", "tiny", "auto"),  # bf16, 3 shards
    ("variants", "single", "auto"),
    ("models_root", "tied", "auto"),
    ("variants", "f32", "auto"),
    ("variants", "f32", "bfloat16"),
    ("variants", "f16", "bfloat16"),
    ("models_root", "tiny", "float32"),  # bf16 stored, widened
    ("variants", "bert", "auto"),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("root", "name", "dtype"), CASES)
def test_every_tensor_equals_plain_from_pretrained(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, root: str, name: str, dtype: str, engine: str
) -> None:
    import torch

    use_engine(monkeypatch, engine)
    path = request.getfixturevalue(root) / name
    slot, events = load(path, dtype=dtype)
    weights = [e for e in events if e.stage is Stage.WEIGHTS]
    assert weights[-1].detail.engine == engine and weights[-1].detail.engine_reason
    ours, reference = slot.loaded.model, plain(path, dtype)
    assert type(ours) is type(reference)
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert mine[key].dtype == tensor.dtype and torch.equal(mine[key], tensor), key
    buffers, their_buffers = dict(ours.named_buffers()), dict(reference.named_buffers())  # non-persistent too
    assert buffers.keys() == their_buffers.keys()
    for key, tensor in their_buffers.items():
        assert buffers[key].dtype == tensor.dtype and torch.equal(buffers[key], tensor), key
    assert ours.config.to_dict() == reference.config.to_dict()
    assert ours.config._attn_implementation == reference.config._attn_implementation  # set by __init__
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(ours(ids)[0], reference(ids)[0])  # the same model, not merely the same tensors
    if name == "tied":
        assert ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    if reference.can_generate():
        assert ours.generation_config.to_dict() == reference.generation_config.to_dict()


def mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1].startswith(str(folder)) and parts[-1].endswith(".safetensors"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi))
    return ranges


@pytest.mark.parametrize("engine", ["stream", "transformers"])
def test_loaded_weights_never_change_or_die_with_their_files(
    models_root: Path, tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fine-tuner re-saving into the folder just loaded: the model keeps the weights it loaded
    (none lies in a mapping of the files), and a truncated shard cannot end the process."""
    import shutil

    import torch

    monkeypatch.setenv("MACTUNER_ENGINE", engine)
    folder = tmp_path / "resaved"
    shutil.copytree(models_root / "tied", folder)
    slot, events = load(folder)
    assert events[-1].percent == 100 and slot.loaded.metadata["engine"] == engine
    ranges = mapped_ranges(folder)
    for name, p in slot.loaded.model.named_parameters():
        assert not any(lo <= p.data_ptr() < hi for lo, hi in ranges), f"{name} lies in a mapping of its shard"
    before = {k: v.clone() for k, v in slot.loaded.model.state_dict().items()}
    (shard,) = sorted(folder.glob("*.safetensors"))
    with open(shard, "r+b") as f:  # rewritten in place, as a trainer's save does
        size = f.seek(0, 2)
        f.seek(size // 2)
        f.write(b"\x7f" * (size - size // 2))
    assert all(torch.equal(before[k], v) for k, v in slot.loaded.model.state_dict().items())
    os.truncate(shard, 16)
    after = slot.loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reads_start_before_the_weights_stage_and_are_credited(models_root: Path) -> None:
    def slow_tokenizer_stage(event: ProgressEvent) -> None:
        if event.stage is Stage.TOKENIZER and event.percent == 5:
            time.sleep(0.3)  # the load thread is busy elsewhere; the reader threads are not

    slot, events = load(models_root / "medium", on_event=slow_tokenizer_stage)
    first = next(e for e in events if e.stage is Stage.WEIGHTS)
    assert 0 < first.detail.prefetched_bytes <= first.detail.bytes_total
    assert first.detail.cache in {"hot", "cold", "mixed"}
    assert first.percent == 40  # the stage percents stay as they are; the bytes follow


def shard_fds(folder: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            out.append(target)
    return out


def cancel_at_first_bytes() -> tuple[threading.Event, list[float], Callable[[ProgressEvent], None]]:
    """A cancel asked as soon as the weights stage reports its first bytes (the time is kept)."""
    cancel = threading.Event()
    asked: list[float] = []

    def on_event(event: ProgressEvent) -> None:
        if event.stage is Stage.WEIGHTS and event.detail.bytes_done > 0 and not asked:
            asked.append(time.monotonic())
            cancel.set()

    return cancel, asked, on_event


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "weights-stream"]


@pytest.mark.parametrize("engine", ENGINES)
def test_cancel_mid_read_stops_within_a_second_and_frees_everything(
    models_root: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    use_engine(monkeypatch, engine)
    cancel, asked, cancel_mid_read = cancel_at_first_bytes()
    slot = ModelSlot()
    with pytest.raises(LoadCancelled):
        slot.load(LoadRequest(models_root / "medium", device="cpu", read_limit_bps=40e6), cancel_mid_read, cancel)
    assert asked and time.monotonic() - asked[0] < 1.0
    assert slot.loaded is None and not slot.busy
    assert not stream_threads() and not shard_fds(models_root / "medium")


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "damaged", params=20_000_000, shards=2, seed=9)


def test_a_shard_truncated_mid_read_is_shard_corrupt_and_nothing_leaks(damaged: Path) -> None:
    last = sorted(damaged.glob("*.safetensors"))[-1]

    def truncate(event: ProgressEvent) -> None:
        if event.stage is Stage.TOKENIZER and last.stat().st_size > 1000:
            os.truncate(last, last.stat().st_size // 2)

    slot = ModelSlot()
    with pytest.raises(ShardCorrupt):
        slot.load(LoadRequest(damaged, device="cpu", read_limit_bps=30e6), truncate, threading.Event())
    assert slot.loaded is None and not stream_threads() and not shard_fds(damaged)


def test_a_shard_deleted_while_loading_is_shard_missing(damaged: Path) -> None:
    last = sorted(damaged.glob("*.safetensors"))[-1]

    def delete(event: ProgressEvent) -> None:
        if event.stage is Stage.WEIGHTS and last.exists():
            last.unlink()

    slot = ModelSlot()
    with pytest.raises(ShardMissing):
        slot.load(LoadRequest(damaged, device="cpu", read_limit_bps=30e6), delete, threading.Event())
    assert slot.loaded is None and not stream_threads() and not shard_fds(damaged)


def test_the_fallback_path_still_reports_per_tensor(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACTUNER_ENGINE", "transformers")
    _, events = load(models_root / "medium", read_limit_bps=150e6)
    weights = [e for e in events if e.stage is Stage.WEIGHTS]
    assert weights[-1].detail.engine == "transformers"
    assert "MACTUNER_ENGINE" in weights[-1].detail.engine_reason
    done = [e.detail.bytes_done for e in weights]
    assert len(set(done)) >= 4 and done == sorted(done) and done[-1] == weights[-1].detail.bytes_total


def resident_bytes(folder: Path) -> int:
    """Bytes of the shards in the page cache now (mincore): what the load has read. (The kernel
    reads a little ahead of the chunks asked for.)"""
    from loader.pipeline.weights.pagecache import cached_share

    total = 0
    for f in folder.glob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            total += int((cached_share(fd, 0, size) or 0.0) * size)
        finally:
            os.close(fd)
    return total


def test_bytes_done_never_runs_ahead_of_the_bytes_read_under_a_read_cap(damaged: Path) -> None:
    for f in damaged.glob("*.safetensors"):  # cold, so the page cache holds only what the load read
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)  # freshly written pages are dirty, and dirty pages are not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    gaps: list[float] = []

    def compare(event: ProgressEvent) -> None:
        d = event.detail
        if event.stage is Stage.WEIGHTS and 0 < d.bytes_done < d.bytes_total:
            gaps.append((d.bytes_done - resident_bytes(damaged)) / d.bytes_total)  # > 0: claimed, not read

    _, events = load(damaged, on_event=compare, read_limit_bps=30e6)
    assert [e for e in events if e.stage is Stage.WEIGHTS][-1].detail.cache == "cold"
    # Never ahead of what the disk gave (the page cache may be ahead of it: the kernel reads ahead).
    assert len(gaps) >= 5 and max(gaps) <= 0.02, gaps
