"""``CpuStream``: the shards mapped privately (copy-on-write) and paged in by parallel reads.

See engine.py for why a mapping rather than reads into fresh memory: the page-cache page *is* the
tensor's storage, so the bytes land once, and nothing is left lazily mapped at 100 %.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

from loader.pipeline.errors import ShardCorrupt
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.weights.pagecache import address_of, cache_state, populate, sampled_resident_fraction
from loader.pipeline.weights.stream import HOT_CHUNK, Stream


class CpuStream(Stream):
    """Private (copy-on-write) mappings of each shard, paged in with MADV_POPULATE_READ."""

    def open(self) -> None:
        self.maps = [mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE) for fd in self.fds]
        self.anchors = [address_of(m) for m in self.maps]
        self.cache = cache_state(
            [
                (sampled_resident_fraction(a + s.data_start, s.data_len), s.data_len)
                for (a, _), s in zip(self.anchors, self.shards, strict=True)
            ]
        )

    def hot_chunk(self) -> int:
        # Page-cache bytes land at several GB/s: 16 MB reads would each end in ~3 ms and each
        # reader then waits for the GIL (up to 5 ms while the load thread runs Python) between
        # chunks. 128 MB keeps a read ~25-50 ms long, so the bar still moves and cancel is prompt.
        return HOT_CHUNK if self.cache == "hot" else 0

    def read(self, k: int, off: int, n: int) -> None:
        shard = self.shards[k]
        address = self.anchors[k][0] + shard.data_start + off
        err = populate(address, n)
        if err == 0:
            return
        if err == errno.EFAULT:  # pages past the end of the file: it was truncated under us
            raise self.truncated(shard, f"page-in failed at offset {shard.data_start + off}")
        if err != errno.EINVAL:
            raise ShardCorrupt(
                gettext_noop("가중치 파일을 읽을 수 없습니다: {name}", name=shard.path.name), os.strerror(err)
            )
        # Kernel before 5.14: read the bytes positionally instead (the file's size is checked first,
        # since touching a mapped page past the end would kill the process).
        if os.fstat(self.fds[k]).st_size < shard.data_start + off + n:
            raise self.truncated(shard, "shorter than its header says")
        os.pread(self.fds[k], n, shard.data_start + off)

    def buffers(self) -> list[Any]:
        import torch

        out = []
        for m, s in zip(self.maps, self.shards, strict=True):
            whole = torch.frombuffer(m, dtype=torch.uint8) if len(m) else torch.empty(0, dtype=torch.uint8)
            out.append(whole[s.data_start : s.data_start + s.data_len])
        return out

    def release(self) -> None:
        # The model's tensors keep their mappings alive; ours go, and a mapping nobody uses is unmapped.
        self.anchors = []
        self.maps = []
