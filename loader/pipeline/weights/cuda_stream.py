"""CUDA: parallel positional reads into a bounded pinned ring, copied to the GPU on a side stream.

A pageable mmap → GPU copy serializes on page faults (safetensors #729/#736) and runs at the
pageable-copy rate (8.5 GB/s on the H200 here, against 55.5 GB/s pinned). So each reader thread
takes a free pinned slot, ``os.preadv``s a chunk into it (the GIL is released during the read),
queues ``gpu[off:off+n].copy_(slot, non_blocking=True)`` on one side stream and records an event;
a slot is reused only after its event completed, and bytes are credited to the bar only when
their copy event completed (``landed``), so the bar never runs ahead of the GPU. The ring is
``SLOTS × SLOT_BYTES`` (≤ 0.6 GB). Pinning ~0.27 GB costs ~0.1 s, so a load that finished leaves
the ring for the next load (never more than one ring); a cancelled or failed load frees it and
empties torch's pinned-host cache.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from typing import Any

from loader.pipeline.weights.engine import Shard
from loader.pipeline.weights.stream import CHUNK, Stream

SLOT_BYTES = CHUNK
MAX_STAGING = 600 * 1000 * 1000


class CudaStream(Stream):
    def __init__(self, shards: list[Shard], cancel: threading.Event, read_limit_bps: float = 0.0) -> None:
        super().__init__(shards, cancel, read_limit_bps)
        self.threads = max(2, min(8, os.cpu_count() or 4))
        self.slots = min(2 * self.threads, MAX_STAGING // SLOT_BYTES)
        self.pending: collections.deque[tuple[Any, int]] = collections.deque()
        self.staging_bytes = 0
        self.gpu: list[Any] = []

    def open(self) -> None:
        import torch

        from loader.pipeline.weights.pagecache import cache_state, cached_share

        self.cache = cache_state(
            [
                (cached_share(fd, s.data_start, s.data_len), s.data_len)
                for fd, s in zip(self.fds, self.shards, strict=True)
            ]
        )
        device = torch.device("cuda", torch.cuda.current_device())
        self.side = torch.cuda.Stream(device=device)
        self.gpu = [torch.empty(s.data_len, dtype=torch.uint8, device=device) for s in self.shards]
        self.ring = _take_ring(self.slots * SLOT_BYTES)
        self.staging_bytes = self.ring.numel()
        self.views = [self.ring[i * SLOT_BYTES : (i + 1) * SLOT_BYTES] for i in range(self.slots)]
        self.memory = [memoryview(v.numpy()) for v in self.views]
        self.slot_done: list[Any] = [None] * self.slots
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(self.slots):
            self.free.put(i)

    def read(self, k: int, off: int, n: int) -> None:
        import torch

        while True:  # a free slot, waking to see a stop
            try:
                slot = self.free.get(timeout=0.05)
                break
            except queue.Empty:
                if self.stop.is_set() or self.cancel.is_set():
                    return
        try:
            if self.slot_done[slot] is not None:
                self.slot_done[slot].synchronize()  # its previous copy has left the slot
            shard = self.shards[k]
            got = os.preadv(self.fds[k], [self.memory[slot][:n]], shard.data_start + off)
            if got != n:
                raise self.truncated(shard, f"short read at offset {shard.data_start + off}: {got} of {n} bytes")
            with torch.cuda.stream(self.side):
                self.gpu[k][off : off + n].copy_(self.views[slot][:n], non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.side)
            self.slot_done[slot] = event
            with self.lock:
                self.pending.append((event, n))
        finally:
            self.free.put(slot)

    def credit(self, n: int) -> None:
        """Bytes count when their copy event completes (see ``landed``), not when read."""

    @property
    def landed(self) -> int:
        with self.lock:
            while self.pending and self.pending[0][0].query():
                self._landed += self.pending.popleft()[1]
            return self._landed

    def drain(self) -> None:
        self.side.synchronize()
        _ = self.landed

    def buffers(self) -> list[Any]:
        return self.gpu

    def release(self) -> None:
        import torch

        if self.gpu:
            self.side.synchronize()  # no copy may still target the buffers we drop
        self.pending.clear()
        self.gpu, self.views, self.memory, self.slot_done = [], [], [], []
        ring, self.ring = getattr(self, "ring", None), None
        if ring is not None and self.error is None and not self.cancel.is_set() and self.finished.is_set():
            _RING[0] = ring  # a finished load keeps the ring for the next one: pinning costs ~0.1 s
            return
        del ring
        _RING[0] = None
        host_empty = getattr(torch._C, "_host_emptyCache", None)
        if host_empty is not None:
            host_empty()  # torch caches freed pinned blocks; give them back to the OS


_RING: list[Any] = [None]  # the one pinned ring kept between finished loads (≤ MAX_STAGING)


def _take_ring(nbytes: int) -> Any:
    import torch

    ring, _RING[0] = _RING[0], None
    if ring is None or ring.numel() != nbytes:
        del ring
        ring = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    return ring
