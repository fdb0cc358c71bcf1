"""The weights stage on the engine's path: credit what landed, hand the tensors to transformers.

On CPU ``from_pretrained`` runs while the reads finish: it only wraps the mapped views (or, when it
converts a dtype, reads them through the mapping itself, which is always correct), then the stage
waits for the last byte. On CUDA the GPU buffers are complete before transformers sees them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loader.pipeline.device import target_without_torch
from loader.pipeline.errors import LoadCancelled
from loader.pipeline.events import WeightsDetail
from loader.pipeline.inspect.checkpoint import CheckpointInfo
from loader.pipeline.weights.cpu_stream import CpuStream
from loader.pipeline.weights.engine import STREAM, Choice, Shard, choose, converting, tensor_views
from loader.pipeline.weights.stream import Stream
from loader.pipeline.weights.tensor_loop import serial_tensor_loop

BUILD_SHARE = 0.02  # of the weights stage: transformers' own per-tensor loop after the bytes


def start_stream(target: str, shards: list[Shard], cancel: threading.Event, read_limit_bps: float) -> Stream:
    if target == "cuda":
        from loader.pipeline.weights.cuda_stream import CudaStream

        return CudaStream(shards, cancel, read_limit_bps).start()  # its ring is pinned off this thread
    return CpuStream(shards, cancel, read_limit_bps).start(open_here=True)


class EarlyReads:
    """CPU reads that begin as soon as the folder has been checked (headers, safe files), before
    the imports (seconds on the first load after a start) and the model-skeleton check.

    They land in private mappings of the shard files, i.e. in the page cache: no memory is taken
    from the model still loaded, so starting before the preflight ends and before the unload
    costs the user nothing if the load is refused. The stages take the stream once the device is
    known; a stream they cannot use (the device turned out to be a GPU) is closed.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.stream: Stream | None = None
        self.choice: Choice | None = None

    def begin(self, info: CheckpointInfo, device: str, dtype: str, remote_code: bool, read_limit_bps: float) -> None:
        if self.stream is not None or target_without_torch(device) != "cpu":
            return
        choice = choose(info, "cpu", converting(dtype, info), remote_code)
        if choice.engine == STREAM:
            self.stream, self.choice = start_stream("cpu", choice.shards, self.cancel, read_limit_bps), choice

    def take(self, target: str) -> tuple[Stream, Choice] | None:
        stream, choice, self.stream, self.choice = self.stream, self.choice, None, None
        if stream is None or choice is None:
            return None
        if target != "cpu":
            stream.close()
            return None
        return stream, choice

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class StreamProgress:
    """Maps the stream's landed bytes (and transformers' loop) onto the weights stage's detail."""

    def __init__(self, stream: Stream, detail: WeightsDetail, report: Callable[[float], None]) -> None:
        self.stream, self.detail, self.report = stream, detail, report
        self.built = 0.0
        self.at_start = self.bytes_done()
        detail.prefetched_bytes = self.at_start
        detail.cache = stream.cache

    def bytes_done(self) -> int:
        total = max(self.stream.total, 1)
        return int(min(self.stream.landed / total, 1.0) * self.detail.bytes_total)

    def emit(self) -> None:
        done = self.bytes_done()
        d = self.detail
        d.shard, d.bytes_done, d.cache = self.stream.shard, done, self.stream.cache
        d.staging_bytes = getattr(self.stream, "staging_bytes", 0)
        # The read rate since the reads began (prefetch included): what the disk really gave.
        d.bytes_per_s, d.eta_s = self.stream.progress.rate_and_eta(done, d.bytes_total)
        fraction = done / max(d.bytes_total, 1)
        self.report((1 - BUILD_SHARE) * fraction + BUILD_SHARE * self.built)

    def wait(self, cancel: threading.Event, until: threading.Event | None = None) -> None:
        until = until or self.stream.finished
        while not until.wait(0.05) and not self.stream.finished.is_set():
            if cancel.is_set():
                raise LoadCancelled()
            self.emit()
        if self.stream.error is not None:
            raise self.stream.error
        if cancel.is_set():
            raise LoadCancelled()
        self.emit()

    def observe(self, items: Any, count: int, cancel: threading.Event) -> Iterator[Any]:
        for i, item in enumerate(items, start=1):
            if cancel.is_set():
                raise LoadCancelled()
            if self.stream.error is not None:
                raise self.stream.error
            yield item
            self.built = i / max(count, 1)
            self.emit()


def load_streamed(
    stream: Stream, progress: StreamProgress, model_cls: Any, config: Any, dtype_arg: Any, target: str,
    path: Path, cancel: threading.Event, set_hook: Callable[[Any], Any], converting: bool,
) -> Any:  # fmt: skip
    # Every byte landed before transformers reads a tensor: its converters (fused or split
    # projections) copy values while it builds, and the destination memory is the stream's own.
    progress.wait(cancel)
    state_dict = tensor_views(stream.shards, stream.buffers())
    count = len(state_dict)

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("desc") == "Loading weights" and args:
            return progress.observe(args[0], count, cancel)
        return factory(*args, **kwargs)

    previous = set_hook(hook)
    try:
        with serial_tensor_loop(serial=not (target == "cpu" and converting)):
            model = model_cls.from_pretrained(
                None, config=config, state_dict=state_dict, dtype=dtype_arg,
                device_map=None if target == "cpu" else {"": target},
            )  # fmt: skip
    finally:
        set_hook(previous)
        del state_dict
    progress.built = 1.0
    progress.wait(cancel)
    if target == "cuda":
        import torch

        torch.cuda.empty_cache()  # transformers' allocator warm-up block: the weights already had memory
    # from_pretrained(None, ...) knows no folder: restore what the path would have given it.
    model.config._name_or_path = str(path)
    model.name_or_path = str(path)
    if model.can_generate() and hasattr(model, "adjust_generation_fn"):  # transformers' own step, same rules
        model.adjust_generation_fn(
            None, True, None, str(path), cache_dir=None, force_download=False, proxies=None,
            local_files_only=True, token=None, revision=None, subfolder="", trust_remote_code=False,
        )  # fmt: skip
    return model
