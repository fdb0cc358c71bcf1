"""Everything decided before the weights: imports, preflight checks, config and model class.

Kept apart from the staged load so the checks that refuse a model (before the current one is
unloaded) read as one list.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from . import device as devices
from .checkpoint import CheckpointInfo, inspect_checkpoint
from .errors import ConfigUnreadable, RemoteCodeRefused, UnknownArchitecture
from .request import LoadRequest

_IMPORT_LOCK = threading.Lock()


def warm_imports() -> None:
    """Import the heavy modules (~4 s cold) so the first click does not pay for them.

    transformers imports lazily: without this the first ``from_pretrained`` spends its first
    seconds importing before the weights bar can move. Its lazy module is not safe to import
    from two threads at once (a half-built module loses names), hence the lock.
    """
    with _IMPORT_LOCK:
        import torch  # noqa: F401
        import transformers
        import transformers.core_model_loading  # noqa: F401
        import transformers.modeling_utils  # noqa: F401

        _ = transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModelForCausalLM
        _ = transformers.PreTrainedTokenizerFast, transformers.LlamaConfig, transformers.LlamaForCausalLM


def preflight(request: LoadRequest) -> CheckpointInfo:
    """Everything that can be refused before the current model is unloaded."""
    devices.validate_options(request.device, request.dtype)
    info = inspect_checkpoint(request.path)
    _refuse_remote_code(request.path, info.config, request.allow_remote_code)
    return info


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _refuse_remote_code(path: Path, config: dict[str, Any], allowed: bool) -> None:
    if allowed:
        return
    tok_config = _read_json(path / "tokenizer_config.json") or {}
    if config.get("auto_map") or tok_config.get("auto_map"):
        raise RemoteCodeRefused(
            "이 모델은 모델 폴더의 파이썬 코드를 실행해야 합니다(trust_remote_code). "
            "보안을 위해 기본적으로 거부됩니다. 관리자가 설정에서 허용할 수 있습니다.",
            f"{path}: auto_map present and trust_remote_code is off",
        )


def load_config(transformers: Any, request: LoadRequest) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(str(request.path), trust_remote_code=request.allow_remote_code)
    except ValueError as exc:
        model_type = (_read_json(request.path / "config.json") or {}).get("model_type")
        if not model_type:
            raise ConfigUnreadable(f"config.json에 model_type이 없습니다: {request.path.name}", repr(exc)) from exc
        if model_type not in transformers.CONFIG_MAPPING:
            raise UnknownArchitecture(
                f"이 버전의 transformers가 지원하지 않는 모델 유형입니다: {model_type}", repr(exc)
            ) from exc
        raise ConfigUnreadable(f"config.json의 값이 잘못되었습니다: {request.path.name}", repr(exc)) from exc
    except Exception as exc:
        raise ConfigUnreadable(f"config.json의 값이 잘못되었습니다: {request.path.name}", repr(exc)) from exc


def model_class(transformers: Any, config: Any) -> Any:
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        if arch.endswith("ForCausalLM"):
            auto = transformers.AutoModelForCausalLM
            if type(config) in auto._model_mapping:
                return auto._model_mapping[type(config)]  # imports the modeling module now, not mid-weights
            return auto
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    if archs:
        raise UnknownArchitecture(
            f"이 버전의 transformers가 모르는 아키텍처입니다: {archs[0]}", f"architectures={archs}"
        )
    return transformers.AutoModelForCausalLM
