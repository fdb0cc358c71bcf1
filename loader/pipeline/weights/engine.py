"""The streaming weights engine: every shard byte read once, in file order, several reads in flight.

Which path runs (``choose``) and why is reported in the weights events (``detail.engine``,
``detail.engine_reason``). transformers still builds the model: the engine hands it the landed
tensors through ``from_pretrained(None, config=..., state_dict=...)``, whose loop keeps key renames,
tied weights, dtype plans and model classes, and whose per-tensor step is a view and a no-op
``.to()`` when the tensor already has its final device and dtype (checked by tests: no copy).

Why hand-written reads rather than a library (checked 2026-11, safetensors 0.8 installed):
- CPU (Linux): measured on the 2-core VM, 1 GB in 4 shards: ``pread`` into fresh memory costs
  0.13–0.8 s hot (first-touch page faults; huge pages help) against 0.005 s for mapping the
  page-cache pages and ``madvise(MADV_POPULATE_READ)``; cold 0.54–0.6 s against 0.44–0.47 s.
  So the CPU path maps each shard privately (copy-on-write, so fine-tuning may write) and pages it
  in from several threads in file order: the page-cache page *is* the tensor's storage (bytes land
  once, no second copy) and nothing is left lazily mapped at 100 %. ``stream.py`` holds this.
- CUDA: ``cuda_stream.py`` preads into a bounded pinned ring and copies on a side stream, the
  fastsafetensors / Run:ai design, in ~100 lines; fastsafetensors and runai-model-streamer are
  Linux-only extra wheels, would not give per-chunk cancel and byte credit, and are not needed
  for CPU or macOS.
- MPS: transformers 5.24 already uses safetensors' ``pread`` backend with ``device="mps"`` when
  ``device_map`` names mps (the bulk path of safetensors #756), so MPS runs that observed path.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loader.pipeline.dtypes import BY_CODE, code_of
from loader.pipeline.inspect.checkpoint import CheckpointInfo

STREAM, TRANSFORMERS = "stream", "transformers"


@dataclass
class Entry:
    name: str
    dtype: str
    shape: list[int]
    start: int  # offsets inside the shard's data section
    end: int


@dataclass
class Shard:
    index: int  # 1-based, as in the bar's "shard k/N"
    path: Path
    data_start: int  # absolute file offset of the data section
    data_len: int
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Choice:
    engine: str
    reason: str
    shards: list[Shard] = field(default_factory=list)


def layout(info: CheckpointInfo) -> list[Shard]:
    """Every shard's tensors in file order, from the headers the preflight read and validated."""
    grouped: list[list[Entry]] = [[] for _ in info.shard_files]
    for name, t in info.tensors.items():
        grouped[t.shard - 1].append(Entry(name, t.dtype, list(t.shape), t.start, t.end))
    shards = []
    for k, (path, entries) in enumerate(zip(info.shard_files, grouped, strict=True), start=1):
        entries.sort(key=lambda e: e.start)
        shards.append(Shard(k, path, info.data_starts[k - 1], max((e.end for e in entries), default=0), entries))
    return shards


def converting(dtype: str, info: CheckpointInfo) -> bool:
    """Whether the requested dtype differs from what every tensor is stored in."""
    stored = {t.dtype for t in info.tensors.values()}
    code = code_of(dtype)  # None for "auto"
    return code is not None and stored != {code}


def choose(info: CheckpointInfo, target: str, converting: bool, remote_code: bool) -> Choice:
    """Stream when the engine covers the checkpoint exactly; otherwise say why transformers loads it."""

    def fallback(reason: str) -> Choice:
        return Choice(TRANSFORMERS, reason)

    if os.environ.get("MACTUNER_ENGINE", "").lower() == TRANSFORMERS:
        return fallback("MACTUNER_ENGINE=transformers")
    if target == "mps":
        return fallback("mps: transformers reads with safetensors' pread backend straight to the device")
    if target not in ("cpu", "cuda"):
        return fallback(f"device {target} is not streamed")
    if target == "cpu" and not sys.platform.startswith("linux"):
        return fallback("cpu outside Linux: no MADV_POPULATE_READ")
    if info.format != "safetensors":
        return fallback("pytorch_model.bin: transformers reads it with the safe unpickler (weights_only)")
    if info.config.get("quantization_config"):
        return fallback("quantized checkpoint: transformers' quantizer loads it")
    if remote_code and info.config.get("auto_map"):
        return fallback("remote code model")
    odd = sorted({t.dtype for t in info.tensors.values() if t.dtype not in BY_CODE or not BY_CODE[t.dtype].streamed})
    if odd:
        return fallback(f"dtypes the engine does not map: {', '.join(odd)}")
    if target == "cuda" and converting:
        return fallback("dtype conversion on cuda: the stored dtype would need a second GPU copy")
    shards = layout(info)
    for shard in shards:
        for e in shard.entries:
            size = BY_CODE[e.dtype].itemsize
            if e.start % size or (shard.data_start + e.start) % size:
                return fallback(f"tensor {e.name} is not aligned to its dtype in {shard.path.name}")
    if target == "cuda":
        return Choice(STREAM, "cuda: parallel pread into a pinned staging ring, async copies on a side stream", shards)
    return Choice(STREAM, "cpu: shards mapped once and paged in by parallel reads in file order", shards)


def tensor_views(shards: list[Shard], buffers: list[Any]) -> dict[str, Any]:
    """Typed views into each shard's landed bytes (``buffers[k]`` = the shard's data section, uint8)."""
    import torch

    out: dict[str, Any] = {}
    for shard, buf in zip(shards, buffers, strict=True):
        for e in shard.entries:
            dtype = getattr(torch, BY_CODE[e.dtype].torch_name)
            out[e.name] = buf[e.start : e.end].view(dtype).reshape(e.shape)
    return out
