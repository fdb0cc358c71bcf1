"""Reads a ``pytorch_model.bin`` shard's tensor names, shapes and dtypes with the safe unpickler only.

A ``.bin`` is a pickle, and a pickle can run code when loaded. ``torch.load(weights_only=True)``
uses torch's restricted unpickler, which only rebuilds tensors and plain containers and raises for
anything else (a custom class, ``os.system`` in a ``__reduce__``): that refusal becomes the typed
``unsafe_pickle`` here, in the preflight, before the current model is unloaded and before
transformers (which also loads ``.bin`` with ``weights_only=True``) sees the file. Loading onto
the ``meta`` device reads the pickle, not the tensor bytes, so this stays cheap for big shards.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from loader.pipeline.dtypes import code_of
from loader.pipeline.errors import FolderUnreadable, ShardCorrupt, UnsafePickle
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.safefs import check_file


@dataclass(frozen=True)
class BinTensor:
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    numel: int
    nbytes: int


def _why(exc: BaseException) -> str:
    """The unpickler's own reason ("Unsupported global: GLOBAL posix.system"), without its advice."""
    text = str(exc)
    for line in text.splitlines():
        if "Unsupported" in line or "global" in line.lower():
            return line.strip()[:300]
    return text.splitlines()[0][:300] if text else type(exc).__name__


def read_bin(file: Path, root: Path) -> dict[str, BinTensor]:
    """Every tensor of one ``.bin`` shard, unpickled safely onto ``meta``; typed errors otherwise."""
    check_file(file, root)  # a regular file inside the folder: no FIFO, device or escape
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "pickle protocol 4" chatter; the refusal is what matters
            state = torch.load(str(file), map_location="meta", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafePickle(
            gettext_noop(
                "안전하지 않은 pickle이라 로드하지 않았습니다(임의 코드 실행 위험, 아무것도 실행하지 않음): {name}. 신뢰할 수 있는 출처라면 safetensors로 변환해 사용하세요.",
                name=file.name,
            ),
            f"{file.name}: torch.load(weights_only=True) refused it: {_why(exc)}",
        ) from None
    except PermissionError as exc:
        raise FolderUnreadable(
            gettext_noop("가중치 파일을 읽을 수 없습니다(권한): {name}", name=file.name), repr(exc)
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        raise ShardCorrupt(
            gettext_noop("가중치 파일(.bin)이 손상되었습니다: {name}", name=file.name),
            f"{file.name}: {type(exc).__name__}: {_why(exc)}",
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ShardCorrupt(
            gettext_noop("가중치 파일(.bin)에 텐서 사전이 없습니다: {name}", name=file.name), f"{file.name}: not a dict"
        )
    out: dict[str, BinTensor] = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            continue  # transformers ignores non-tensor entries too
        code = code_of(str(tensor.dtype).removeprefix("torch.")) or "U8"
        numel = tensor.numel()
        out[name] = BinTensor(code, tuple(tensor.shape), numel, numel * tensor.element_size())
    return out
