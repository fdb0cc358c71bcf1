"""Validates one safetensors header the way the safetensors library would, before it is asked to.

Every malformed case (text or infinite shapes, negative, reversed, overlapping or overflowing
offsets, a byte count that is not numel × dtype size, an unknown dtype, an entry that is not an
object) becomes ``ShardCorrupt`` here rather than an untyped error deep inside ``from_pretrained``.
Details never quote the file's bytes: a bogus length field is "out of range", not its value.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loader.pipeline.dtypes import BY_CODE
from loader.pipeline.errors import ShardCorrupt
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.safefs import JsonUnreadable, open_regular

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_DIMS = 16


@dataclass(frozen=True)
class HeaderEntry:
    dtype: str
    shape: tuple[int, ...]
    numel: int
    start: int
    end: int


def _corrupt(file: Path, why: str) -> ShardCorrupt:
    return ShardCorrupt(
        gettext_noop("가중치 파일 헤더가 손상되었습니다: {name}", name=file.name), f"{file.name}: {why}"
    )


def _safe_name(name: str) -> str:
    return repr(name[:80])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonUnreadable(f"tensor {_safe_name(key)} appears twice")
        out[key] = value
    return out


def _int(value: Any) -> int | None:
    return value if type(value) is int else None  # not bool, not float, not text


def _entry(file: Path, name: str, raw: Any, data_len: int) -> HeaderEntry:
    label = _safe_name(name)
    if not isinstance(raw, dict):
        raise _corrupt(file, f"entry {label} is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in BY_CODE:
        raise _corrupt(file, f"entry {label} has an unknown dtype")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise _corrupt(file, f"entry {label} has a shape that is not a list of dimensions")
    dims = [_int(d) for d in shape]
    if any(d is None or d < 0 for d in dims):
        raise _corrupt(file, f"entry {label} has a dimension that is not a non-negative integer")
    numel = math.prod(dims)  # type: ignore[arg-type]
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise _corrupt(file, f"entry {label} has no [start, end] data_offsets")
    start, end = _int(offsets[0]), _int(offsets[1])
    if start is None or end is None or start < 0 or end < start:
        raise _corrupt(file, f"entry {label} has data_offsets that are not two ordered non-negative integers")
    if end > data_len:
        raise ShardCorrupt(
            gettext_noop("가중치 파일이 잘렸습니다(불완전한 다운로드?): {name}", name=file.name),
            f"{file.name}: entry {label} ends past the end of the file",
        )
    if end - start != numel * BY_CODE[dtype].itemsize:
        raise _corrupt(file, f"entry {label}: data_offsets span {end - start} bytes, shape × dtype needs another size")
    return HeaderEntry(dtype, tuple(dims), numel, start, end)  # type: ignore[arg-type]


def _read_raw(fh: IO[bytes], file: Path, size: int) -> tuple[int, Any]:
    raw_len = fh.read(8)
    if len(raw_len) < 8:
        raise ShardCorrupt(
            gettext_noop("가중치 파일이 손상되었습니다: {name}", name=file.name), f"{file.name}: shorter than 8 bytes"
        )
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len < 2 or header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise ShardCorrupt(
            gettext_noop("가중치 파일이 손상되었습니다: {name}", name=file.name),
            f"{file.name}: header length field is out of range for a {size}-byte file",
        )
    try:
        text = fh.read(header_len).decode("utf-8")
        return header_len, json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise _corrupt(file, "header is not UTF-8 text") from None
    except RecursionError:
        raise _corrupt(file, "header JSON is nested too deeply") from None
    except JsonUnreadable as exc:
        raise _corrupt(file, str(exc)) from None
    except ValueError as exc:
        raise _corrupt(file, f"header is not JSON ({getattr(exc, 'msg', 'invalid')})") from None


def read_header(file: Path, root: Path) -> dict[str, HeaderEntry]:
    """Every tensor of one shard, validated; raises ``ShardCorrupt`` for any malformed header."""
    return read_shard(file, root)[1]


def read_shard(file: Path, root: Path) -> tuple[int, dict[str, HeaderEntry]]:
    """(file offset of the data section, every tensor), validated as ``read_header`` says."""
    with open_regular(file, root) as (fh, size):
        header_len, header = _read_raw(fh, file, size)
    if not isinstance(header, dict):
        raise _corrupt(file, "header is not an object")
    data_len = size - 8 - header_len
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise _corrupt(file, "__metadata__ is not a map of strings")
    entries = {name: _entry(file, name, raw, data_len) for name, raw in header.items()}
    # safetensors lays the data out back to back: each tensor starts where the previous ended.
    spans = sorted((e.start, e.end, n) for n, e in entries.items())
    cursor = 0
    for start, end, name in spans:
        if start != cursor:
            why = "overlaps the previous tensor" if start < cursor else "leaves a gap before it"
            raise _corrupt(file, f"entry {_safe_name(name)} {why}")
        cursor = end
    if cursor != data_len:
        raise _corrupt(file, f"tensor data ends at {cursor} but the file holds {data_len} data bytes")
    return 8 + header_len, entries
