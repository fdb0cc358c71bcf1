"""``CpuStream``: each shard's data section read by parallel ``preadv`` into the host's own memory.

The bytes land in anonymous memory, not in a mapping of the file: a loaded model must never change
or die with its files. Fine-tuners re-save into the folder they just loaded from; with weights
backed by the file's pages (as plain transformers leaves them), rewriting a shard in place changed
the loaded tensors and truncating one would end the process with SIGBUS at the next read. The cost
is one copy out of the page cache on a hot load (BENCHMARKS.md, "#19 item 11"); cold, the copy
hides behind the disk.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Any

from loader.pipeline.weights.pagecache import cache_state, cached_share
from loader.pipeline.weights.stream import HOT_CHUNK, Stream


class CpuStream(Stream):
    """Anonymous destination buffers, one per shard, filled by the readers' ``preadv`` calls."""

    # The load thread waits for every byte before transformers builds the model (streamed.py):
    # all cores copy, none is kept for it.
    spare_core = False

    def open(self) -> None:
        self.cache = cache_state(
            [
                (cached_share(fd, s.data_start, s.data_len), s.data_len)
                for fd, s in zip(self.fds, self.shards, strict=True)
            ]
        )
        self.dests = [_anonymous(s.data_len) for s in self.shards]
        self.views = [memoryview(d) for d in self.dests]

    def hot_chunk(self) -> int:
        # Page-cache bytes land at several GB/s: 16 MB reads would each end in ~3 ms and each
        # reader then waits for the GIL (up to 5 ms while the load thread runs Python) between
        # chunks. 128 MB keeps a read ~25-50 ms long, so the bar still moves and cancel is prompt.
        return HOT_CHUNK if self.cache == "hot" else 0

    def read(self, k: int, off: int, n: int) -> None:
        shard, view, done = self.shards[k], self.views[k][off : off + n], 0
        while done < n:  # preadv releases the GIL; a short read goes on where it stopped
            got = os.preadv(self.fds[k], [view[done:]], shard.data_start + off + done)
            if got == 0:
                raise self.truncated(shard, f"end of file at offset {shard.data_start + off + done}")
            done += got

    def buffers(self) -> list[Any]:
        import torch

        # frombuffer keeps the mapping alive while any tensor views it; unmapped when the last goes.
        return [
            torch.frombuffer(d, dtype=torch.uint8) if len(d) else torch.empty(0, dtype=torch.uint8) for d in self.dests
        ]

    def release(self) -> None:
        # The model's tensors keep their shard's buffer alive; the stream's references go.
        self.views = []
        self.dests = []


def _anonymous(size: int) -> mmap.mmap:
    """Private anonymous memory for one shard, in huge pages where the kernel has them: a 4 KB page
    fault per 4 KB copied is what makes the copy slow (measured: 1 GB in 0.5 s on 4 KB pages,
    0.19 s on 2 MB pages, 2 threads)."""
    mem = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            mem.madvise(mmap.MADV_HUGEPAGE)
    return mem
