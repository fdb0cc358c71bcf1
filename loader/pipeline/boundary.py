"""Where an untyped exception from the weights becomes a typed ``LoadError``: by its class, once.

transformers, safetensors and torch raise their own exceptions while the weights load. The
stages used to guess a corrupt shard from words in ``repr(exc)`` ("header", "safetensors"), which
called a header-less runtime error corrupt and missed safetensors' own ``SafetensorError`` (an
``Exception``, not an ``OSError``). Here the class decides, and the stream's readers use the same
rules for a shard they were reading. An exception no rule knows is returned as ``None``: the caller
re-raises it, and the job fails as an internal error with its traceback, as a bug should.
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile

from loader.pipeline.errors import (
    ConfigUnreadable,
    DeviceUnavailable,
    FolderUnreadable,
    LoadError,
    MissingPackage,
    OutOfMemory,
    ShardCorrupt,
    ShardMissing,
)
from loader.pipeline.i18n import gettext_noop

# errno values that mean the file (or the disk under it) went away after it was checked.
_GONE = frozenset({errno.ENOENT, errno.ESTALE, errno.ENXIO, errno.ENODEV})
_DENIED = frozenset({errno.EACCES, errno.EPERM})


def _corrupt_classes() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the bytes of a weights file are not what its format says."""
    classes: list[type[BaseException]] = [pickle.UnpicklingError, EOFError, zipfile.BadZipFile]
    try:
        from safetensors import SafetensorError  # lazily: the preflight runs before it is imported
    except ImportError:  # pragma: no cover - safetensors is a dependency of transformers
        pass
    else:
        classes.append(SafetensorError)
    return tuple(classes)


def _file_name(exc: OSError, fallback: str) -> str:
    return os.path.basename(str(exc.filename or "")) or fallback


def shard_read_error(exc: BaseException, name: str = "?") -> LoadError:
    """A reader thread's failure on shard ``name``: whatever stopped a read of checked bytes is the
    file's fault (gone, or unreadable), never an internal error."""
    if isinstance(exc, LoadError):
        return exc
    if isinstance(exc, OSError) and (isinstance(exc, FileNotFoundError) or exc.errno in _GONE):
        gone = _file_name(exc, name)
        return ShardMissing(gettext_noop("샤드 파일이 로드 중에 사라졌습니다: {name}", name=gone), repr(exc))
    return ShardCorrupt(gettext_noop("가중치 파일을 읽을 수 없습니다: {value}", value=exc), repr(exc))


def weights_error(exc: BaseException, name: str, target: str) -> LoadError | None:
    """Type an exception raised while loading the weights of folder ``name`` onto ``target``.

    ``None``: not one of ours to type (a bug); the caller lets it propagate.
    """
    import torch

    if isinstance(exc, LoadError):
        return exc
    if isinstance(exc, ImportError):  # e.g. a quantized checkpoint whose backend is not installed
        return MissingPackage(
            gettext_noop("이 모델에 필요한 패키지가 설치되어 있지 않습니다: {value}", value=exc), repr(exc)
        )
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return OutOfMemory(
            gettext_noop("메모리가 부족합니다({target}). 더 작은 모델이나 dtype을 선택하세요.", target=target),
            repr(exc),
        )
    if isinstance(exc, TypeError):
        if target != "mps":
            return None
        return DeviceUnavailable(  # e.g. a dtype the Metal backend has no kernel for
            gettext_noop("MPS(Apple GPU)가 이 모델을 올릴 수 없습니다: {reason}", reason=str(exc)[:200]), repr(exc)
        )
    if isinstance(exc, RecursionError):  # a JSON file transformers reads (generation_config.json) nested absurdly
        return ConfigUnreadable(
            gettext_noop("모델 폴더의 JSON 파일이 너무 깊게 중첩되어 읽을 수 없습니다: {name}", name=name),
            "RecursionError while transformers read the folder's JSON files",
        )
    if isinstance(exc, _corrupt_classes()) or (isinstance(exc, OSError) and exc.errno == errno.EIO):
        return ShardCorrupt(gettext_noop("가중치 파일을 읽을 수 없습니다(손상?): {name}", name=name), repr(exc))
    if isinstance(exc, OSError):
        if isinstance(exc, FileNotFoundError) or exc.errno in _GONE:
            return ShardMissing(
                gettext_noop("샤드 파일이 로드 중에 사라졌습니다: {name}", name=_file_name(exc, name)), repr(exc)
            )
        if isinstance(exc, PermissionError) or exc.errno in _DENIED:
            return FolderUnreadable(
                gettext_noop("가중치 파일을 읽을 수 없습니다(권한): {name}", name=_file_name(exc, name)), repr(exc)
            )
    if isinstance(exc, (OSError, RuntimeError, ValueError, KeyError)):
        return LoadError(gettext_noop("모델 가중치를 불러오지 못했습니다: {name}", name=name), repr(exc))
    return None
