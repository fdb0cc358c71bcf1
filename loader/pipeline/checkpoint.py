"""Reads a checkpoint folder without loading it: config, shard map and byte sizes.

Everything here is cheap (JSON and safetensors headers only), so it runs before anything is
unloaded: a broken folder is refused while the current model stays loaded, and the weights
stage gets exact bytes per tensor for byte-weighted progress.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    ConfigUnreadable,
    FolderMissing,
    FolderUnreadable,
    NotAModelFolder,
    ShardCorrupt,
    ShardMissing,
)

MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip
INDEX_NAME = "model.safetensors.index.json"


@dataclass
class TensorInfo:
    shard: int  # 1-based position of its shard file
    dtype: str
    numel: int
    nbytes: int


@dataclass
class CheckpointInfo:
    path: Path
    config: dict[str, Any]
    shard_files: list[Path] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shard_files)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return str(archs[0]) if archs else str(self.config.get("model_type", "?"))

    def bytes_at(self, target_element_size: int | None) -> int:
        """Memory the weights need once loaded in a dtype of ``target_element_size`` bytes."""
        if target_element_size is None:
            return self.total_bytes
        return sum(
            t.numel * target_element_size if t.dtype in FLOAT_DTYPES else t.nbytes for t in self.tensors.values()
        )


FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FolderMissing(f"모델 폴더를 찾을 수 없습니다: {path.name}", f"{path} does not exist")
    if not path.is_dir():
        raise NotAModelFolder(f"모델 폴더가 아닙니다: {path.name}", f"{path} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise FolderUnreadable(f"모델 폴더를 읽을 수 없습니다(권한): {path.name}", f"{path}: no read permission")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise NotAModelFolder(f"모델 폴더가 아닙니다(config.json 없음): {path.name}", f"{config_path} missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except PermissionError as exc:
        raise FolderUnreadable(f"config.json을 읽을 수 없습니다(권한): {path.name}", repr(exc)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigUnreadable(f"config.json을 읽을 수 없습니다: {path.name}", repr(exc)) from exc
    if not isinstance(config, dict):
        raise ConfigUnreadable(f"config.json 형식이 잘못되었습니다: {path.name}", "top level is not an object")
    return config


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """Parse and sanity-check one shard's header, so truncation is caught before loading."""
    try:
        size = file.stat().st_size
        with file.open("rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise ShardCorrupt(f"가중치 파일이 손상되었습니다: {file.name}", f"{file}: shorter than 8 bytes")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len <= 0 or header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise ShardCorrupt(
                    f"가중치 파일이 손상되었습니다: {file.name}", f"{file}: bad header length {header_len}"
                )
            header = json.loads(fh.read(header_len).decode("utf-8"))
    except PermissionError as exc:
        raise FolderUnreadable(f"가중치 파일을 읽을 수 없습니다(권한): {file.name}", repr(exc)) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardCorrupt(f"가중치 파일 헤더가 손상되었습니다: {file.name}", repr(exc)) from exc
    if not isinstance(header, dict):
        raise ShardCorrupt(f"가중치 파일 헤더가 손상되었습니다: {file.name}", "header is not an object")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            data_end = max(data_end, int(end))
            _ = entry["dtype"], entry["shape"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardCorrupt(f"가중치 파일 헤더가 손상되었습니다: {file.name}", f"{name}: {exc!r}") from exc
    if 8 + header_len + data_end > size:
        raise ShardCorrupt(
            f"가중치 파일이 잘렸습니다(불완전한 다운로드?): {file.name}",
            f"{file}: {size} bytes on disk, header needs {8 + header_len + data_end}",
        )
    return header


def shard_files(path: Path) -> list[Path]:
    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ShardCorrupt(f"샤드 인덱스 파일이 손상되었습니다: {path.name}", repr(exc)) from exc
        files = [path / n for n in names]
        for f in files:
            if not f.is_file():
                raise ShardMissing(f"샤드 파일이 없습니다: {f.name} ({len(files)}개 중)", f"{index} names missing {f}")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    if any(path.glob("*.bin")) or any(path.glob("*.pth")):
        raise NotAModelFolder(
            f"safetensors 가중치만 지원합니다(.bin/.pth 파일은 보안상 로드하지 않음): {path.name}",
            f"{path}: only pickle weights found",
        )
    raise NotAModelFolder(f"가중치 파일(.safetensors)이 없습니다: {path.name}", f"{path}: no safetensors")


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Config + every shard header; raises a typed error for anything a load would trip on."""
    path = Path(path)
    info = CheckpointInfo(path=path, config=read_config(path))
    info.shard_files = shard_files(path)
    for k, file in enumerate(info.shard_files, start=1):
        for name, entry in read_safetensors_header(file).items():
            if name == "__metadata__":
                continue
            numel = 1
            for dim in entry["shape"]:
                numel *= int(dim)
            start, end = entry["data_offsets"]
            info.tensors[name] = TensorInfo(k, entry["dtype"], numel, int(end) - int(start))
    return info
