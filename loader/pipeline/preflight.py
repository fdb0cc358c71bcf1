"""Everything decided before the weights: imports, preflight checks, config and model class.

Kept apart from the staged load so the checks that refuse a model (before the current one is
unloaded) read as one list: options, files (``checkpoint``/``safefs``), remote code, the
config's own fields and bounds, and the weights the config implies (``skeleton``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loader.pipeline import device as devices
from loader.pipeline.dtypes import FLOAT_NAMES
from loader.pipeline.errors import ConfigUnreadable, FolderUnreadable, RemoteCodeRefused, UnknownArchitecture
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.adapters import preflight_adapter
from loader.pipeline.inspect.checkpoint import CheckpointInfo, inspect_checkpoint
from loader.pipeline.inspect.formats import ADAPTER, detect
from loader.pipeline.inspect.safefs import TOKENIZER_CAP, JsonUnreadable, folder_root, read_json
from loader.pipeline.request import LoadRequest

_IMPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Skeleton:
    """What the skeleton check settled, for the stages: the parsed config (the tokenizer and config
    stages reuse it instead of parsing the folder again) and the dtype the model is planned in.

    The meta model itself is not kept: ``from_pretrained`` builds the real class afresh.
    """

    config: Any
    dtype: str


IMPORT_STEPS = (
    ("torch", 0.35), ("transformers", 0.5), ("transformers.modeling_utils", 0.75),
    ("transformers.core_model_loading", 0.8),
)  # fmt: skip


def warm_imports(progress: Callable[[str, float], None] | None = None) -> None:
    """Import the heavy modules (~4 s cold) so the first click does not pay for them.

    transformers imports lazily: without this the first ``from_pretrained`` spends its first
    seconds importing before the weights bar can move. Its lazy module is not safe to import
    from two threads at once (a half-built module loses names), hence the lock.
    """
    with _IMPORT_LOCK:
        for module, fraction in IMPORT_STEPS:
            if module not in sys.modules and progress is not None:
                progress(module.split(".")[0], fraction * 0.5)  # half of "preparing"; checks take the rest
            importlib.import_module(module)
        import transformers

        _ = transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModelForCausalLM
        _ = transformers.PreTrainedTokenizerFast, transformers.LlamaConfig, transformers.LlamaForCausalLM


def preflight(request: LoadRequest, on_inspected: Callable[[CheckpointInfo], None] | None = None) -> CheckpointInfo:
    """Everything that can be refused before the current model is unloaded.

    A PEFT adapter folder is checked over its base: the returned info is the base's, carrying
    the adapter (``info.adapter``). ``on_inspected`` is called once the folder's files and headers
    are checked and before the checks that need torch (the slot starts the reads there).
    """
    devices.validate_options(request.device, request.dtype)
    if detect(request.path) == ADAPTER:
        try:
            return preflight_adapter(request, functools.partial(_preflight_model, on_inspected=on_inspected))
        except OSError as exc:
            raise FolderUnreadable(
                gettext_noop("어댑터 폴더의 파일을 읽을 수 없습니다: {name}", name=request.path.name), repr(exc)
            ) from exc
    return _preflight_model(request, on_inspected)


def _preflight_model(
    request: LoadRequest, on_inspected: Callable[[CheckpointInfo], None] | None = None
) -> CheckpointInfo:
    from loader.pipeline.inspect.skeleton import build_meta, check_counts, check_layers, compare, target_dtype

    try:
        info = inspect_checkpoint(request.path)
    except OSError as exc:  # permission, I/O error, a link swapped under us: never untyped
        raise FolderUnreadable(
            gettext_noop("모델 폴더의 파일을 읽을 수 없습니다: {name}", name=request.path.name), repr(exc)
        ) from exc
    remote = _refuse_remote_code(request, info.config)
    check_config_fields(info.config)
    check_counts(info.config)
    if remote or info.config.get("quantization_config"):
        return info  # remote code or a quantizer builds its own modules: no plan to check against
    check_layers(info.config, info)
    if on_inspected is not None:
        on_inspected(info)
    warm_imports()
    import transformers

    config = load_config(transformers, request, info.config)
    model_cls = concrete_class(transformers, config)
    dtype = target_dtype(request.dtype, info.config, info)
    model = build_meta(model_cls, config, dtype)
    info.plan = compare(model, info, dtype)
    info.skeleton = Skeleton(config, dtype)
    return info


def check_config_fields(config: dict[str, Any]) -> None:
    """``architectures`` is a list of class names and ``model_type`` a name, or the config is wrong."""
    archs = config.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) and a.isidentifier() for a in archs)
    ):
        raise ConfigUnreadable(
            gettext_noop("config.json의 architectures는 모델 클래스 이름의 목록이어야 합니다."),
            "architectures is not a list of names",
        )
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigUnreadable(
            gettext_noop("config.json의 model_type은 문자열이어야 합니다."), "model_type is not a string"
        )
    for key in ("dtype", "torch_dtype"):
        if config.get(key) is not None and config[key] not in FLOAT_NAMES:
            raise ConfigUnreadable(
                gettext_noop(
                    "config.json의 {key}는 부동소수점 형식이어야 합니다: {str}", key=key, str=str(config[key])[:40]
                ),
                f"{key} is not a float dtype",
            )


def _refuse_remote_code(request: LoadRequest, config: dict[str, Any]) -> bool:
    """True when the model needs remote code (and it is allowed); refuses it otherwise."""
    tok_config: Any = {}
    with contextlib.suppress(OSError, JsonUnreadable):  # the tokenizer stage words its own errors
        tok_config = read_json(request.path / "tokenizer_config.json", folder_root(request.path), TOKENIZER_CAP)
    needs = bool(config.get("auto_map") or (isinstance(tok_config, dict) and tok_config.get("auto_map")))
    if needs and not request.allow_remote_code:
        raise RemoteCodeRefused(
            gettext_noop(
                "이 모델은 모델 폴더의 파이썬 코드를 실행해야 합니다(trust_remote_code). 보안을 위해 기본적으로 거부됩니다. 관리자가 설정에서 허용할 수 있습니다."
            ),
            f"{request.path}: auto_map present and trust_remote_code is off",
        )
    return needs


def load_config(transformers: Any, request: LoadRequest, raw: dict[str, Any] | None = None) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(str(request.path), trust_remote_code=request.allow_remote_code)
    except ValueError as exc:
        if raw is None:
            try:
                raw = read_json(request.path / "config.json", folder_root(request.path))
            except (OSError, JsonUnreadable):
                raw = None
        model_type = raw.get("model_type") if isinstance(raw, dict) else None
        if not model_type:
            raise ConfigUnreadable(
                gettext_noop("config.json에 model_type이 없습니다: {name}", name=request.path.name), repr(exc)
            ) from exc
        if isinstance(model_type, str) and model_type not in transformers.CONFIG_MAPPING:
            raise UnknownArchitecture(
                gettext_noop(
                    "이 버전의 transformers가 지원하지 않는 모델 유형입니다: {model_type}", model_type=model_type[:80]
                ),
                repr(exc)[:500],
            ) from exc
        raise ConfigUnreadable(
            gettext_noop("config.json의 값이 잘못되었습니다: {name}", name=request.path.name), repr(exc)[:500]
        ) from exc
    except Exception as exc:
        raise ConfigUnreadable(
            gettext_noop("config.json의 값이 잘못되었습니다: {name}", name=request.path.name), repr(exc)[:500]
        ) from exc


def _is_model_class(transformers: Any, cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)


def model_class(transformers: Any, config: Any) -> Any:
    archs = getattr(config, "architectures", None) or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise ConfigUnreadable(
            gettext_noop("config.json의 architectures는 모델 클래스 이름의 목록이어야 합니다."), f"{archs!r}"[:200]
        )
    for arch in archs:
        if arch.endswith("ForCausalLM"):
            auto = transformers.AutoModelForCausalLM
            if type(config) in auto._model_mapping:
                return auto._model_mapping[type(config)]  # imports the modeling module now, not mid-weights
        cls = getattr(transformers, arch, None) if arch.isidentifier() else None
        if _is_model_class(transformers, cls):
            return cls
    if archs:
        raise UnknownArchitecture(
            gettext_noop("이 버전의 transformers가 모르는 모델 클래스입니다: {archs}", archs=archs[0][:80]),
            f"architectures={archs!r}"[:300],
        )
    return transformers.AutoModelForCausalLM


def concrete_class(transformers: Any, config: Any) -> Any:
    """The class ``from_pretrained`` will build; an Auto class is resolved through its mapping."""
    cls = model_class(transformers, config)
    if _is_model_class(transformers, cls):
        return cls
    mapping = cls._model_mapping
    if type(config) not in mapping:
        raise UnknownArchitecture(
            gettext_noop("이 구성으로 만들 수 있는 언어 모델 클래스가 없습니다: {name}", name=type(config).__name__),
            f"{type(config)!r}",
        )
    return mapping[type(config)]
