"""Reads a checkpoint's shards in file order with several reads in flight, counting landed bytes.

``Stream`` owns the reader threads, the cancel/stop checks between chunks, the optional read-rate
cap (``MACTUNER_READ_LIMIT_MBPS``, paced by ``bytes_progress`` as the fallback's page-in is) and the
byte count the bar shows; ``CpuStream`` (cpu_stream.py) lands the bytes in the host's own memory,
``CudaStream`` (cuda_stream.py) on the GPU. It starts as soon as it can (CPU: once the folder is
checked, ``streamed.EarlyReads``), so the reads overlap the imports, the skeleton check and the
tokenizer and config stages; the weights stage then credits what already landed. A truncated shard
or one that vanishes or is replaced during the load becomes a typed error, and ``close`` joins
every thread (each is at most one chunk from a stop check).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Any

from loader.pipeline.boundary import shard_read_error
from loader.pipeline.errors import LoadError, ShardCorrupt, ShardMissing
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.weights.bytes_progress import CHUNK, ByteProgress
from loader.pipeline.weights.engine import Shard

__all__ = ["CHUNK", "FIRST_CHUNK", "HOT_CHUNK", "Stream"]

FIRST_CHUNK = 1 << 20
HOT_CHUNK = 128 << 20


class Stream:
    threads = 4
    spare_core = True  # hot reads are CPU work: leave a core to a load thread that runs meanwhile

    def __init__(self, shards: list[Shard], cancel: threading.Event, read_limit_bps: float = 0.0) -> None:
        self.shards = shards
        self.cancel = cancel
        self.total = sum(s.data_len for s in shards)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        # Rate, ETA, the read cap and its chunk size: the same account the fallback path keeps.
        self.progress = ByteProgress(self.total, cancel, read_limit_bps, stop=self.stop)
        self.chunks = self._plan(self.progress.chunk)
        self.finished = threading.Event()
        self.opened = threading.Event()  # files open, destination memory ready: buffers() may be called
        self.next = 0
        self.issued = 0
        self._landed = 0
        self.shard = 1 if shards else 0
        self.error: LoadError | None = None
        self.open_s = 0.0  # files opened, destination memory ready (benchmarks print it)
        self.first_read_at: float | None = None  # wall clock: the request's "first byte" timing
        self.cache = "unknown"
        self.fds: list[int] = []
        self._thread: threading.Thread | None = None

    def _plan(self, chunk: int) -> list[tuple[int, int, int]]:
        """(shard, offset, length) in file order; the first read is small so the first bytes land
        (and the bar moves) sooner."""
        chunks = [
            (k, off, min(chunk, s.data_len - off))
            for k, s in enumerate(self.shards)
            for off in range(0, s.data_len, chunk)
        ]
        if chunks and chunks[0][2] > FIRST_CHUNK:
            k, off, n = chunks[0]
            chunks[:1] = [(k, off, FIRST_CHUNK), (k, off + FIRST_CHUNK, n - FIRST_CHUNK)]
        return chunks

    # lifecycle -------------------------------------------------------------------------------
    def start(self, open_here: bool = False) -> Stream:
        """Start reading. ``open_here`` opens the files in the calling thread first: on CPU that is
        a few cheap syscalls, and done by the thread that holds the GIL anyway it costs no
        hand-offs (a new thread opening them waits up to a switch interval after each syscall
        while the caller runs Python), so the first read comes milliseconds sooner."""
        if open_here:
            try:
                self._open_files()
            except BaseException as exc:  # noqa: BLE001 - reported to the loading thread as a typed error
                self._fail(exc)
                self.finished.set()
                return self
        self._thread = threading.Thread(target=self._run, args=(not open_here,), name="weights-stream", daemon=True)
        self._thread.start()
        return self

    def _open_files(self) -> None:
        t0 = time.monotonic()
        for shard in self.shards:  # non-blocking: a shard swapped for a FIFO must not hang the open
            self.fds.append(os.open(shard.path, os.O_RDONLY | os.O_NONBLOCK))
            held = os.fstat(self.fds[-1])
            if not stat.S_ISREG(held.st_mode):
                raise ShardMissing(
                    gettext_noop("샤드 파일이 로드 중에 바뀌었습니다: {name}", name=shard.path.name),
                    f"{shard.path} is no longer a regular file",
                )
            if held.st_size < shard.data_start + shard.data_len:
                raise self.truncated(shard, f"{held.st_size} bytes, needs {shard.data_start + shard.data_len}")
        self.open()
        if self.progress.limit_bps <= 0 and self.hot_chunk() > CHUNK:
            self.chunks = self._plan(self.hot_chunk())  # before any reader starts
            # Paging in cached bytes is CPU work, not waiting: leave a core to the load thread.
            self.threads = max(1, min(self.threads, (os.cpu_count() or 2) - self.spare_core))
        self.open_s = time.monotonic() - t0
        self.opened.set()

    def _run(self, open_files: bool = True) -> None:
        try:
            if open_files:
                self._open_files()
            workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            if self.error is None and not self.stop.is_set():
                self.drain()
                self.verify()
        except BaseException as exc:  # noqa: BLE001 - reported to the loading thread as a typed error
            self._fail(exc)
        finally:
            self.finished.set()

    def close(self) -> None:
        """Stop the readers, wait for them, close files and drop every buffer this stream holds."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join()
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.release()

    # progress --------------------------------------------------------------------------------
    @property
    def landed(self) -> int:
        return self._landed

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    # readers ---------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while not self.stop.is_set() and not self.cancel.is_set():
                with self.lock:
                    if self.next >= len(self.chunks):
                        return
                    k, off, n = self.chunks[self.next]
                    self.next += 1
                    self.issued += n
                    allowed = self.issued
                    self.shard = max(self.shard, k + 1)
                if not self.progress.pace(allowed):  # the rate cap, waking to see a stop
                    return
                self.read(k, off, n)
                self.first_read_at = self.first_read_at or time.time()
                self.credit(n)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def credit(self, n: int) -> None:
        with self.lock:
            self._landed += n

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = self.typed(exc)
        self.stop.set()

    def typed(self, exc: BaseException) -> LoadError:
        return shard_read_error(exc)

    def truncated(self, shard: Shard, detail: str) -> ShardCorrupt:
        return ShardCorrupt(
            gettext_noop("가중치 파일이 로드 중에 잘렸습니다: {name}", name=shard.path.name), f"{shard.path}: {detail}"
        )

    def verify(self) -> None:
        """Every shard still on disk, the same file, whole: else the landed bytes are not the model."""
        for shard, fd in zip(self.shards, self.fds, strict=True):
            try:
                now = os.stat(shard.path)
            except FileNotFoundError as exc:
                raise ShardMissing(
                    gettext_noop("샤드 파일이 로드 중에 사라졌습니다: {name}", name=shard.path.name), repr(exc)
                ) from exc
            held = os.fstat(fd)
            if (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev):
                raise ShardMissing(
                    gettext_noop("샤드 파일이 로드 중에 바뀌었습니다: {name}", name=shard.path.name),
                    f"{shard.path} replaced",
                )
            if held.st_size < shard.data_start + shard.data_len:
                raise self.truncated(shard, f"{held.st_size} bytes, needs {shard.data_start + shard.data_len}")

    # per device ------------------------------------------------------------------------------
    def open(self) -> None:
        raise NotImplementedError

    def hot_chunk(self) -> int:
        """A larger read size when the bytes are already in memory (0: keep ``CHUNK``)."""
        return 0

    def read(self, k: int, off: int, n: int) -> None:
        raise NotImplementedError

    def drain(self) -> None:
        """Wait for work still in flight after the reads (async copies)."""

    def release(self) -> None:
        raise NotImplementedError

    def buffers(self) -> list[Any]:
        raise NotImplementedError
