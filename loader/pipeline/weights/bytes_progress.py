"""One account of bytes moved: rate, ETA, the optional read cap, cancel, and the chunk size.

The streaming engine (``stream.Stream``) and the fallback's page-in (``fallback.WeightsTracker``)
both read weights in chunks under the same promises: the bar shows MB/s and an ETA, a
``MACTUNER_READ_LIMIT_MBPS`` cap holds, and a cancel is seen within a chunk. They used to keep two
copies of that arithmetic with different chunk sizes and wake intervals; both use this one now.
"""

from __future__ import annotations

import threading
import time

from loader.pipeline.errors import LoadCancelled

CHUNK = 16 << 20  # one read: long enough to amortize its cost, short enough for a prompt cancel
MIN_CHUNK = 1 << 20
# Under a cap a chunk is at most this long a share of one second's budget: the reader comes back
# to the cap (and to the cancel check) about every 25 ms, so the rate is smooth at any cap.
CHUNKS_PER_S = 40
WAKE_S = 0.05  # how often a wait for the cap looks at cancel
# A rate from the first chunk or two is noise ("1 MB/s, 3m 51s left", then 72 MB/s half a second
# later; a free first chunk under a cap read as 8× the cap): no rate or ETA until both have passed.
SETTLE_S = 0.5
SETTLE_CHUNKS = 2


def chunk_bytes(limit_bps: float) -> int:
    """The read size: ``CHUNK``, or a fortieth of a second's budget under a cap (at least 1 MB)."""
    if limit_bps <= 0:
        return CHUNK
    return max(MIN_CHUNK, min(CHUNK, int(limit_bps / CHUNKS_PER_S)))


class ByteProgress:
    """Bytes against a total since ``started``; paces reads to ``limit_bps`` (0: no cap).

    ``stop`` is an extra reason to stop waiting (a stream closed by its owner), beside ``cancel``.
    """

    def __init__(
        self, total: int, cancel: threading.Event, limit_bps: float = 0.0, stop: threading.Event | None = None
    ) -> None:
        self.total = total
        self.cancel = cancel
        self.limit_bps = limit_bps
        self.stop = stop
        self.started = time.monotonic()
        self.chunk = chunk_bytes(limit_bps)

    @property
    def stopped(self) -> bool:
        return self.cancel.is_set() or (self.stop is not None and self.stop.is_set())

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise LoadCancelled()

    def pace(self, allowed: int) -> bool:
        """Wait until the cap allows ``allowed`` bytes since the start, waking every ``WAKE_S`` to see
        a stop or cancel. False when one came (the caller stops); True at once without a cap."""
        if self.limit_bps <= 0:
            return True
        due = self.started + allowed / self.limit_bps
        while (wait := due - time.monotonic()) > 0:
            if self.stopped:
                return False
            time.sleep(min(wait, WAKE_S))
        return True

    def rate_and_eta(self, done: int, total: int | None = None) -> tuple[float, float | None]:
        """Bytes per second since the start and seconds left for ``total`` (default: our total);
        (0, None) before the reading settles (``SETTLE_S`` and ``SETTLE_CHUNKS``) unless all is done.
        Under a cap the rate never reads above it (the first chunk is not paced)."""
        elapsed = time.monotonic() - self.started
        total = self.total if total is None else total
        if elapsed <= 0 or done <= 0:
            return 0.0, None
        if done < total and (elapsed < SETTLE_S or done < SETTLE_CHUNKS * self.chunk):
            return 0.0, None
        rate = done / elapsed
        if self.limit_bps > 0:
            rate = min(rate, self.limit_bps)
        return rate, max(total - done, 0) / rate
