"""Reads a checkpoint folder without loading it: config, shard map and byte sizes.

Everything here is cheap (JSON and safetensors headers only), so it runs before anything is
unloaded: a broken folder is refused while the current model stays loaded, and the weights
stage gets exact bytes per tensor for byte-weighted progress. Every file goes through
``safefs`` (regular, inside the folder, size-capped) and every header through ``header``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from loader.pipeline.dtypes import FLOAT_CODES
from loader.pipeline.errors import (
    ConfigUnreadable,
    FolderMissing,
    FolderUnreadable,
    NotAModelFolder,
    ShardCorrupt,
    ShardMissing,
    UnsafeFile,
)
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.formats import (
    ADAPTER,
    BIN,
    BIN_INDEX,
    BIN_NAME,
    NONE,
    SAFETENSORS,
    detect,
    quant_refusal,
    refuse,
)
from loader.pipeline.inspect.header import MAX_HEADER_BYTES, read_shard
from loader.pipeline.inspect.safefs import (
    CONFIG_CAP,
    JsonUnreadable,
    check_file,
    check_folder_files,
    folder_root,
    read_json,
)
from loader.pipeline.inspect.torchbin import read_bin

__all__ = ["INDEX_NAME", "MAX_HEADER_BYTES", "CheckpointInfo", "TensorInfo", "tensor_bytes"]

INDEX_NAME = "model.safetensors.index.json"


@dataclass
class TensorInfo:
    shard: int  # 1-based position of its shard file
    dtype: str
    numel: int
    nbytes: int
    shape: tuple[int, ...] = ()
    start: int = -1  # offsets in its shard's data section (safetensors; -1 for .bin)
    end: int = -1


@dataclass
class CheckpointInfo:
    path: Path
    config: dict[str, Any]
    shard_files: list[Path] = field(default_factory=list)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    root: Path | None = None
    data_starts: list[int] = field(default_factory=list)  # per shard: file offset of the tensor data
    # What the config implies (``skeleton.TensorPlan``), set by the preflight once it is checked.
    plan: Any = None
    format: str = SAFETENSORS  # or BIN: pytorch_model*.bin, read with the safe unpickler
    # A PEFT adapter loaded over this checkpoint (``adapters.AdapterInfo``); its bytes follow the base's.
    adapter: Any = None
    # The preflight's meta model (``preflight.Skeleton``): the config it was built from is reused.
    skeleton: Any = None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shard_files)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures")
        if isinstance(archs, list) and archs and isinstance(archs[0], str):
            return archs[0]
        model_type = self.config.get("model_type")
        return model_type if isinstance(model_type, str) else "?"

    def bytes_at(self, target_element_size: int | None) -> int:
        """Memory the weights need once loaded in a dtype of ``target_element_size`` bytes."""
        return tensor_bytes(self.tensors, target_element_size)


def tensor_bytes(tensors: dict[str, TensorInfo], target_element_size: int | None) -> int:
    """Memory ``tensors`` take once loaded: floats in the target dtype (as stored for None), the rest as stored."""
    if target_element_size is None:
        return sum(t.nbytes for t in tensors.values())
    return sum(t.numel * target_element_size if t.dtype in FLOAT_CODES else t.nbytes for t in tensors.values())


def _open_folder(path: Path) -> None:
    if not path.exists():
        raise FolderMissing(
            gettext_noop("모델 폴더를 찾을 수 없습니다: {name}", name=path.name), f"{path} does not exist"
        )
    if not path.is_dir():
        raise NotAModelFolder(
            gettext_noop("모델 폴더가 아닙니다: {name}", name=path.name), f"{path} is not a directory"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise FolderUnreadable(
            gettext_noop("모델 폴더를 읽을 수 없습니다(권한): {name}", name=path.name), f"{path}: no read permission"
        )


def read_config(path: Path, root: Path | None = None) -> dict[str, Any]:
    _open_folder(path)
    root = root or folder_root(path)
    config_path = path / "config.json"
    if not os.path.lexists(config_path):
        raise NotAModelFolder(
            gettext_noop("모델 폴더가 아닙니다(config.json 없음): {name}", name=path.name), f"{config_path} missing"
        )
    try:
        config = read_json(config_path, root, CONFIG_CAP)
    except PermissionError as exc:
        raise FolderUnreadable(
            gettext_noop("config.json을 읽을 수 없습니다(권한): {name}", name=path.name), repr(exc)
        ) from exc
    except FileNotFoundError as exc:
        raise NotAModelFolder(
            gettext_noop("모델 폴더가 아닙니다(config.json 없음): {name}", name=path.name), "config.json missing"
        ) from exc
    except (OSError, JsonUnreadable) as exc:
        raise ConfigUnreadable(
            gettext_noop("config.json을 읽을 수 없습니다: {name}", name=path.name), f"config.json: {exc}"
        ) from exc
    if not isinstance(config, dict):
        raise ConfigUnreadable(
            gettext_noop("config.json 형식이 잘못되었습니다: {name}", name=path.name), "top level is not an object"
        )
    return config


def _shard_name(name: Any, path: Path, index: str = INDEX_NAME) -> str:
    """A shard named by the index must be a plain relative path inside the folder."""
    pure = PurePosixPath(name) if isinstance(name, str) else None
    if pure is None or not name or "\\" in name or "\0" in name or pure.is_absolute() or ".." in pure.parts:
        raise UnsafeFile(
            gettext_noop("샤드 인덱스가 모델 폴더 밖의 파일을 가리킵니다: {name}", name=path.name),
            f"{index}: a weight_map entry is not a file name inside the folder",
        )
    return name


def _index_shards(path: Path, root: Path, index_name: str = INDEX_NAME) -> list[Path]:
    index = path / index_name
    try:
        data = read_json(index, root, CONFIG_CAP)
    except (OSError, JsonUnreadable) as exc:
        raise ShardCorrupt(
            gettext_noop("샤드 인덱스 파일이 손상되었습니다: {name}", name=path.name), f"{index_name}: {exc}"
        ) from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) for k in weight_map):
        raise ShardCorrupt(
            gettext_noop("샤드 인덱스 파일이 손상되었습니다: {name}", name=path.name),
            f"{index_name}: no weight_map object",
        )
    if not isinstance(data.get("metadata"), dict):  # transformers reads it; without it the load fails late
        raise ShardCorrupt(
            gettext_noop("샤드 인덱스 파일이 손상되었습니다: {name}", name=path.name),
            f"{index_name}: no metadata object",
        )
    # Each distinct name checked once (an index names a handful of shards for ~1,000 tensors).
    distinct = {v if isinstance(v, str) else _shard_name(v, path, index_name) for v in weight_map.values()}
    names = sorted(_shard_name(v, path, index_name) for v in distinct)
    files = [path / n for n in names]
    for f in files:
        try:
            check_file(f, root)
        except FileNotFoundError:
            raise ShardMissing(
                gettext_noop("샤드 파일이 없습니다: {name} ({len}개 중)", name=f.name, len=len(files)),
                f"{index_name} names a missing shard {f.name}",
            ) from None
    return files


def shard_files(path: Path, root: Path | None = None) -> list[Path]:
    """The weight files transformers will read: safetensors when there are any (they win over
    ``.bin``, as in transformers), else ``pytorch_model.bin`` or the shards its index names."""
    root = root or folder_root(path)
    for index, single in ((INDEX_NAME, "model.safetensors"), (BIN_INDEX, BIN_NAME)):
        if os.path.lexists(path / index):
            return _index_shards(path, root, index)
        if os.path.lexists(path / single):
            check_file(path / single, root)
            return [path / single]
    raise NotAModelFolder(
        gettext_noop("가중치 파일(.safetensors 또는 pytorch_model.bin)이 없습니다: {name}", name=path.name),
        f"{path}: no model weights",
    )


def _refuse_format(path: Path, config: dict[str, Any] | None = None) -> None:
    """GGUF, MLX, ONNX, TF/Flax and Meta .pth folders: a typed refusal that says what to do."""
    kind = detect(path, config)
    if kind not in (NONE, SAFETENSORS, BIN, ADAPTER):
        raise refuse(kind, path)
    if config is not None and (quant := quant_refusal(config, path)) is not None:
        raise quant


def _tensors(file: Path, root: Path) -> tuple[int, dict[str, TensorInfo]]:
    if file.name.endswith(".safetensors"):
        data_start, entries = read_shard(file, root)
        return data_start, {
            n: TensorInfo(0, e.dtype, e.numel, e.end - e.start, e.shape, e.start, e.end) for n, e in entries.items()
        }
    return 0, {n: TensorInfo(0, t.dtype, t.numel, t.nbytes, t.shape) for n, t in read_bin(file, root).items()}


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Config + every shard header; raises a typed error for anything a load would trip on."""
    path = Path(path)
    if os.path.lexists(path):
        _refuse_format(path)  # before "not a folder"/"no config.json": name the format instead
    _open_folder(path)
    root = folder_root(path)
    info = CheckpointInfo(path=path, config=read_config(path, root), root=root)
    _refuse_format(path, info.config)
    check_folder_files(path, root)  # tokenizer & co: before AutoTokenizer opens any of them
    info.shard_files = shard_files(path, root)
    info.format = SAFETENSORS if info.shard_files[0].name.endswith(".safetensors") else BIN
    for k, file in enumerate(info.shard_files, start=1):
        try:
            data_start, entries = _tensors(file, root)
        except PermissionError as exc:
            raise FolderUnreadable(
                gettext_noop("가중치 파일을 읽을 수 없습니다(권한): {name}", name=file.name), repr(exc)
            ) from exc
        for name, e in entries.items():
            if name in info.tensors:
                raise ShardCorrupt(
                    gettext_noop("같은 텐서가 여러 샤드에 있습니다: {name}", name=file.name),
                    f"tensor {name[:80]!r} appears in two shards",
                )
            e.shard = k
            info.tensors[name] = e
        info.data_starts.append(data_start)
    return info
