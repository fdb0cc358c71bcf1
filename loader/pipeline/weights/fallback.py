"""The fallback weights path: observe transformers' own load, then make the weights really resident.

Runs what the streaming engine does not cover (see engine.py: MPS, quantized checkpoints, remote
code, unusual dtypes, dtype conversion on CUDA) exactly as plain ``from_pretrained`` would.

transformers 5 memory-maps safetensors when the dtype matches, so ``from_pretrained`` returns
before most bytes are read; a bar that said 85 % then would lie. The stage therefore has two
passes: (1) ``from_pretrained`` observed per parameter through ``set_tqdm_hook``, and (2) a
page-in of every CPU tensor in chunks, so the bar moves with the bytes actually read and a
cancel is seen between chunks. When a dtype conversion is needed, pass 1 reads the bytes
itself and gets most of the weight.
"""

from __future__ import annotations

import errno
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from loader.pipeline.errors import LoadCancelled, ShardCorrupt
from loader.pipeline.events import WeightsDetail
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.checkpoint import CheckpointInfo
from loader.pipeline.weights import pagecache
from loader.pipeline.weights.bytes_progress import ByteProgress
from loader.pipeline.weights.tensor_loop import serial_tensor_loop


class WeightsTracker:
    """Turns per-parameter and per-chunk steps into one monotonic byte-weighted fraction."""

    def __init__(
        self, info: CheckpointInfo, pass1_share: float, emit: Callable[[], None], cancel: threading.Event,
        read_limit_bps: float = 0.0,
    ) -> None:  # fmt: skip
        self.info = info
        self.emit = emit
        self.total = max(info.total_bytes, 1)
        # Rate, ETA, the read cap and its chunk size: the same account the streaming engine keeps.
        self.progress = ByteProgress(self.total, cancel, read_limit_bps)
        self.shards = len(info.shard_files)
        # Share of the stage's bytes that pass 1 (from_pretrained) really reads: all of them when
        # it copies to a device, most when it converts dtypes, little when it only memory-maps.
        self.pass1_share = pass1_share
        self.pass1_done = 0
        self.pass2_done = 0
        self.pass2_total = 1
        self.shard = 1 if self.shards else 0
        self._avg = self.total / max(len(info.tensors), 1)

    @property
    def fraction(self) -> float:
        p1 = min(self.pass1_done / self.total, 1.0)
        p2 = min(self.pass2_done / self.pass2_total, 1.0)
        return self.pass1_share * p1 + (1 - self.pass1_share) * p2

    @property
    def bytes_done(self) -> int:
        return int(self.fraction * self.total)

    def rate_and_eta(self) -> tuple[float, float | None]:
        return self.progress.rate_and_eta(self.bytes_done)

    def check_cancel(self) -> None:
        self.progress.check_cancel()

    # pass 1 --------------------------------------------------------------------------------
    def observe(self, items: Any) -> Iterator[Any]:
        for item in items:
            self.check_cancel()
            key = item[0] if isinstance(item, tuple) else str(item)
            tensor = self.info.tensors.get(key)
            if tensor is not None:
                self.shard = tensor.shard
            yield item
            self.pass1_done += tensor.nbytes if tensor is not None else int(self._avg)
            self.emit()
        self.check_cancel()

    def finish_pass1(self) -> None:
        self.pass1_done = self.total

    # pass 2 --------------------------------------------------------------------------------
    def page_in(self, model: Any) -> None:
        """Pass 2: every CPU weight into the process's own memory. A tensor transformers left on
        a mapping of its file (a storage that cannot resize: safetensors' mmap) is copied out in
        chunks, so the loaded model never changes or dies with its files (a trainer re-saving in
        place; a truncation would be SIGBUS at the next read); others are paged in."""
        import torch

        groups: dict[int, list[Any]] = {}  # tensors sharing memory stay sharing it (tied weights)
        shard_of: dict[int, int] = {}
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.device.type != "cpu" or tensor.numel() == 0 or not tensor.is_contiguous():
                continue
            groups.setdefault(tensor.data_ptr(), []).append(tensor)
            info = self.info.tensors.get(name)
            shard_of.setdefault(tensor.data_ptr(), info.shard if info else 0)
        todo = sorted(groups.items(), key=lambda entry: (shard_of[entry[0]] or self.shards, entry[0]))
        self.pass2_total = max(sum(ts[0].numel() * ts[0].element_size() for _, ts in todo), 1)
        chunk = self.progress.chunk
        for ptr, tensors in todo:
            if shard_of[ptr]:
                self.shard = shard_of[ptr]
            first = tensors[0]
            mapped = not first.untyped_storage().resizable()
            own = torch.empty_like(first) if mapped else first
            source, dest = first.detach().reshape(-1).view(torch.uint8), own.detach().reshape(-1).view(torch.uint8)
            nbytes = first.numel() * first.element_size()
            for offset in range(0, nbytes, chunk):
                self.check_cancel()
                length = min(chunk, nbytes - offset)
                populate(ptr + offset, length, first, offset, torch)  # fault-free, typed if truncated
                if mapped:
                    dest[offset : offset + length].copy_(source[offset : offset + length])
                self.pass2_done += length
                self.progress.pace(self.pass2_done)  # the read cap; a cancel ends the wait
                self.check_cancel()
                self.emit()
            if mapped:
                for tensor in tensors:
                    tensor.data = own
        self.pass2_done = self.pass2_total
        self.shard = self.shards


def populate(address: int, length: int, tensor: Any, offset: int, torch: Any) -> None:
    """Fault ``length`` bytes at ``address`` into RAM (they may be lazily memory-mapped)."""
    if sys.platform.startswith("linux"):
        err = pagecache.populate(address, length)
        if err == 0:
            return
        if err == errno.EFAULT:  # past the end of a shard truncated under us; touching would SIGBUS
            raise ShardCorrupt(gettext_noop("가중치 파일이 로드 중에 잘렸습니다"), f"page-in failed at {address:#x}")
    flat = tensor.detach().reshape(-1).view(torch.uint8)
    flat[offset : offset + length : pagecache.PAGE].sum()


def load_observed(
    info: CheckpointInfo, request: Any, model_cls: Any, dtype_arg: Any, target: str, converting: bool,
    detail: WeightsDetail, report: Callable[[float], None], cancel: threading.Event, set_hook: Callable[[Any], Any],
) -> Any:  # fmt: skip
    """transformers' own ``from_pretrained``, observed per tensor through its tqdm hook."""

    def emit() -> None:
        detail.shard, detail.bytes_done = tracker.shard, tracker.bytes_done
        detail.bytes_per_s, detail.eta_s = tracker.rate_and_eta()
        report(tracker.fraction)

    pass1_share = 1.0 if target != "cpu" else 0.9 if converting else 0.1
    tracker = WeightsTracker(info, pass1_share, emit, cancel, request.read_limit_bps)

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") == "Loading weights" and args:
            return tracker.observe(args[0])
        return factory(*args, **kwargs)

    previous = set_hook(hook)
    try:
        # On an accelerator transformers copies each tensor straight to the device inside the
        # observed loop (on MPS through safetensors' pread backend), so pass 1 carries the progress;
        # on CPU the tensors stay memory-mapped until paged in.
        with serial_tensor_loop(serial=target == "mps"):  # transformers #48029: MPS + the pool crash
            model = model_cls.from_pretrained(
                str(request.path), dtype=dtype_arg, trust_remote_code=request.allow_remote_code,
                device_map=None if target == "cpu" else target,
            )  # fmt: skip
    finally:
        set_hook(previous)
    tracker.finish_pass1()
    if target == "cpu":
        tracker.page_in(model)
    emit()
    return model


def move_to_device(model: Any, device: str, on_bytes: Callable[[int, int], None], cancel: threading.Event) -> None:
    """Copy what is not yet on ``device`` module by module, measured and cancellable, then sync.

    Weights loaded with a device map are already there (the loop just checks); the sync makes
    "90 %" mean the copies have finished, not merely been queued.
    """
    if device == "cpu":
        on_bytes(1, 1)
        return
    import torch

    modules = list(model.modules())
    total = max(sum(p.numel() * p.element_size() for p in model.parameters()), 1)
    done = 0
    for module in modules:
        if cancel.is_set():
            raise LoadCancelled()
        size = sum(p.numel() * p.element_size() for p in module.parameters(recurse=False) if p.device.type != device)
        module._apply(lambda t: t.to(device, non_blocking=False), recurse=False)
        done += size
        on_bytes(done, total)
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()
    on_bytes(total, total)
