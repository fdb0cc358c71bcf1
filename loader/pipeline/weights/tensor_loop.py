"""When transformers' per-tensor loop must run serially (``HF_DEACTIVATE_ASYNC_LOAD``).

``from_pretrained`` hands every tensor to a 4-thread pool that reads it from its file and
converts it. Two cases want the loop inline instead:

- **Our tensors are already read** (the stream: CPU pages mapped and paged in, CUDA bytes on the
  device): with a matching dtype each job is a no-op and 900 submissions cost only GIL hand-offs
  between five threads (hot 1 GB on 2 cores: median 55 → 43 ms). A CPU dtype conversion keeps the
  pool: its jobs read and convert pages in parallel.
- **The target is MPS**: with the pool on, a bf16 checkpoint loaded as float16/float32 with
  ``device_map="mps"`` segfaults or hangs at "Loading weights 0/N" (transformers #48029, open, on
  M4/M5 with torch 2.13); with the switch set it loads. MPS always loads serially.

The switch is transformers' own and read per call; one load runs at a time per process (the
slot's lock), and a value the user set is left alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

ASYNC_SWITCH = "HF_DEACTIVATE_ASYNC_LOAD"


@contextlib.contextmanager
def serial_tensor_loop(serial: bool) -> Iterator[None]:
    if not serial or ASYNC_SWITCH in os.environ:
        yield
        return
    os.environ[ASYNC_SWITCH] = "1"
    try:
        yield
    finally:
        os.environ.pop(ASYNC_SWITCH, None)
