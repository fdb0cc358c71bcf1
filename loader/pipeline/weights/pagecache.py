"""The page cache, seen from a mapping: which pages are resident, and paging them in.

``mincore`` says whether a mapping's pages are in memory without reading or faulting them: the
engine uses it to report a load as hot, cold or mixed. ``MADV_POPULATE_READ`` (Linux 5.14+) pages
a range in from several threads with the GIL released.
"""

from __future__ import annotations

import ctypes
import mmap
from typing import Any

PAGE = mmap.PAGESIZE
MADV_POPULATE_READ = 22
libc = ctypes.CDLL(None, use_errno=True)
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def address_of(mm: mmap.mmap) -> tuple[int, Any]:
    anchor = ctypes.c_char.from_buffer(mm)  # keeps the export alive as long as the caller holds it
    return ctypes.addressof(anchor), anchor


def populate(address: int, length: int) -> int:
    """Page ``length`` bytes at ``address`` in (``MADV_POPULATE_READ``, GIL released): 0, or the
    errno — EINVAL before Linux 5.14, EFAULT past the end of a file truncated under the mapping."""
    start = address & ~(PAGE - 1)
    if libc.madvise(start, address + length - start, MADV_POPULATE_READ) == 0:
        return 0
    return ctypes.get_errno()


def resident_fraction(address: int, length: int) -> float | None:
    """Share of a mapping's pages already in the page cache (mincore: no read, no fault)."""
    start = address & ~(PAGE - 1)
    pages = (address + length - start + PAGE - 1) // PAGE
    if pages <= 0:
        return None
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(start, address + length - start, vec) != 0:
        return None
    return (pages - bytes(vec).count(0)) / pages  # Linux sets only bit 0; counted in C, not per page


def sampled_resident_fraction(address: int, length: int, windows: int = 64) -> float | None:
    """``resident_fraction`` from ``windows`` spread-out runs of 4 pages: a 30 GB checkpoint has
    7 M pages and mincore over all of them costs ~0.3 s before the first read; a sample decides
    hot/cold/mixed (90 % / 10 %) as well in well under a millisecond."""
    span = 4 * PAGE
    if length <= windows * span:
        return resident_fraction(address, length)
    step = (length - span) // (windows - 1)
    vec, resident, seen = (ctypes.c_ubyte * 5)(), 0, 0
    for i in range(windows):
        start = (address + i * step) & ~(PAGE - 1)
        if libc.mincore(start, span, vec) == 0:
            resident, seen = resident + sum(b & 1 for b in vec[:4]), seen + 4
    return resident / seen if seen else None


def cache_state(fractions: list[tuple[float | None, int]]) -> str:
    known = [(f, n) for f, n in fractions if f is not None]
    if not known:
        return "unknown"
    share = sum(f * n for f, n in known) / max(sum(n for _, n in known), 1)
    return "hot" if share >= 0.9 else "cold" if share <= 0.1 else "mixed"


def cached_share(fd: int, start: int, length: int) -> float | None:
    """How much of a file's byte range is in the page cache (mincore on a short-lived mapping:
    nothing is read or faulted in)."""
    if length == 0:
        return None
    mm = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE)
    address, anchor = address_of(mm)
    try:
        return sampled_resident_fraction(address + start, length)
    finally:
        del anchor
        mm.close()
