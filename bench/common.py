"""Shared bench helpers: generated checkpoints, cache eviction, best-of timing."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mactuner_site.settings")


def checkpoint(name: str, params: str, shards: int) -> Path:
    from mactuner_dev.synth import parse_count, write_checkpoint

    path = OUT / name
    if not (path / "config.json").exists():
        print(f"generating {path} ({params} params, {shards} shards)...", flush=True)
        if parse_count(params) >= 2e9:
            with fast_random():
                write_checkpoint(path, parse_count(params), shards, "bfloat16", seed=7)
        else:
            write_checkpoint(path, parse_count(params), shards, "bfloat16", seed=7)
    return path


@contextlib.contextmanager
def fast_random() -> Iterator[None]:
    """Big benchmark checkpoints: tile one random block instead of drawing every weight (the load
    does not care about the values, and drawing 4 B normals takes minutes)."""
    import torch

    block = torch.randn(1 << 24)
    real = torch.randn

    def tiled(*shape: Any, **kw: Any) -> Any:
        size = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list | torch.Size) else shape
        n = math.prod(size)
        reps = -(-n // block.numel())
        return block.repeat(reps)[:n].reshape(size)

    torch.randn = tiled
    try:
        yield
    finally:
        torch.randn = real


def shard_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def evict(path: Path) -> None:
    """Drop only the shard files from the page cache (cold-cache runs)."""
    for f in shard_files(path):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(path: Path) -> None:
    subprocess.run(["cat", *map(str, shard_files(path))], stdout=subprocess.DEVNULL, check=True)


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    del result
    gc.collect()
    return elapsed


def touch_all(model: object) -> None:
    """Read one byte per page of every parameter: the cheapest way to make mmap'd weights resident."""
    import torch

    for p in model.parameters():  # type: ignore[attr-defined]
        if p.numel() and p.is_contiguous():
            p.detach().reshape(-1).view(torch.uint8)[::4096].sum()


READ_CHUNK = 16 << 20


def read_rate(path: Path, threads: int, cold: bool) -> float:
    """GB/s of positional reads of every shard, in file order, into a pre-faulted buffer per thread."""
    import torch

    if cold:
        evict(path)
    else:
        warm(path)
    jobs = []
    for f in shard_files(path):
        fd = os.open(f, os.O_RDONLY)
        jobs += [(fd, off) for off in range(0, f.stat().st_size, READ_CHUNK)]
    buffers = threading.local()

    def job(item: tuple[int, int]) -> int:
        if not hasattr(buffers, "mv"):
            buffers.mv = memoryview(torch.ones(READ_CHUNK, dtype=torch.uint8).numpy())
        return os.preadv(item[0], [buffers.mv], item[1])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        got = sum(pool.map(job, jobs))
    elapsed = time.perf_counter() - t0
    for fd in {fd for fd, _ in jobs}:
        os.close(fd)
    return got / elapsed / 1e9
