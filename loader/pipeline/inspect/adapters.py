"""PEFT adapters (LoRA and the other types peft knows): checked over their base, loaded after it.

An adapter folder holds ``adapter_config.json`` + ``adapter_model.safetensors`` (or ``.bin``) and
names its base in ``base_model_name_or_path``. The preflight resolves the base (the caller's
resolver: a models-folder or HF-cache name; else an absolute path), runs the base's own full
preflight, and checks every adapter tensor against the base's meta skeleton (module exists, is a
target module, LoRA shapes fit), so a wrong base is refused before anything is unloaded. The
weights stage then loads the base as usual and ``adapter_weights`` injects the adapter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from loader.pipeline.errors import (
    AdapterBaseMissing,
    AdapterBaseOutside,
    AdapterMismatch,
    ConfigUnreadable,
    MissingPackage,
    NotAModelFolder,
    UnsupportedFormat,
)
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.checkpoint import CheckpointInfo, TensorInfo
from loader.pipeline.inspect.formats import ADAPTER, ADAPTER_CONFIG, detect
from loader.pipeline.inspect.header import read_header
from loader.pipeline.inspect.safefs import CONFIG_CAP, JsonUnreadable, check_folder_files, folder_root, read_json
from loader.pipeline.inspect.torchbin import read_bin
from loader.pipeline.request import LoadRequest

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PROMPT_TYPES = {"PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "ADAPTION_PROMPT", "CPT"}
SHOWN = 3


@dataclass
class AdapterInfo:
    path: Path
    config: dict[str, Any]
    base: str  # base_model_name_or_path as written
    base_path: Path
    file: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    merged: bool = False

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def describe(self) -> dict[str, Any]:
        return {**summary(self.config), "base_path": str(self.base_path), "bytes": self.nbytes, "merged": self.merged}


def summary(config: dict[str, Any]) -> dict[str, Any]:
    """What the list and the metadata show: type, rank, alpha, target modules, base."""
    targets = config.get("target_modules")
    if isinstance(targets, list):
        targets = sorted(str(t) for t in targets)
    return {
        "type": config.get("peft_type"), "rank": config.get("r"), "alpha": config.get("lora_alpha"),
        "target_modules": targets, "base": config.get("base_model_name_or_path"),
        "task_type": config.get("task_type"),
    }  # fmt: skip


def read_adapter_config(path: Path, root: Path | None = None) -> dict[str, Any]:
    root = root or folder_root(path)
    try:
        config = read_json(path / ADAPTER_CONFIG, root, CONFIG_CAP)
    except (OSError, JsonUnreadable) as exc:
        raise ConfigUnreadable(
            gettext_noop("{adapter_config}을 읽을 수 없습니다: {name}", adapter_config=ADAPTER_CONFIG, name=path.name),
            f"{ADAPTER_CONFIG}: {exc}",
        ) from exc
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise ConfigUnreadable(
            gettext_noop(
                "{adapter_config}에 peft_type이 없습니다: {name}", adapter_config=ADAPTER_CONFIG, name=path.name
            ),
            f"{ADAPTER_CONFIG}: no peft_type string",
        )
    return config


def _peft_types() -> set[str]:
    try:
        from peft import PEFT_TYPE_TO_CONFIG_MAPPING
    except ImportError as exc:
        raise MissingPackage(
            gettext_noop("PEFT 어댑터를 로드하려면 peft 패키지가 필요합니다(pip install peft)."), repr(exc)
        ) from exc
    return {str(getattr(k, "value", k)) for k in PEFT_TYPE_TO_CONFIG_MAPPING}


def adapter_file(path: Path, root: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).exists():
            return path / name
    raise NotAModelFolder(
        gettext_noop("어댑터 가중치 파일(adapter_model.safetensors)이 없습니다: {name}", name=path.name),
        f"{path}: no adapter weights",
    )


def resolve_base(name: str, request: LoadRequest) -> Path | None:
    """The caller's resolver first (catalog names, paths inside its roots), then an absolute path
    to a folder, unless the request may read only inside its roots."""
    resolver = request.base_resolver
    if resolver is not None and (found := resolver(name)) is not None:
        return found
    candidate = Path(name)
    if candidate.is_absolute() and candidate.is_dir():
        if request.base_roots_only:
            raise AdapterBaseOutside(
                gettext_noop(
                    "어댑터의 기본 모델이 모델 폴더와 Hugging Face 캐시 밖에 있습니다: {base}. "
                    "기본 모델을 models/ 폴더나 Hugging Face 캐시로 옮기거나, 그 상위 폴더를 "
                    "MACTUNER_BASE_DIRS 설정에 추가하세요(터미널의 loadmodel은 경로를 그대로 읽습니다).",
                    base=name[:200],
                ),
                f"base_model_name_or_path={name[:200]!r} is outside the models folder, the HF cache and MACTUNER_BASE_DIRS",
            )
        return candidate
    return None


def preflight_adapter(request: LoadRequest, base_preflight: Any) -> CheckpointInfo:
    """The base's full preflight plus the adapter's own checks; the base info carries the adapter."""
    path = request.path
    root = folder_root(path)
    config = read_adapter_config(path, root)
    peft_type = config["peft_type"]
    if peft_type not in _peft_types():
        raise UnsupportedFormat(
            gettext_noop("설치된 peft가 모르는 어댑터 유형입니다: {peft_type}", peft_type=peft_type[:40]),
            f"{ADAPTER_CONFIG}: peft_type {peft_type[:40]!r}",
        )
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise AdapterBaseMissing(
            gettext_noop("어댑터 설정에 기본 모델(base_model_name_or_path)이 없습니다: {name}", name=path.name),
            "no base_model_name_or_path",
        )
    base_path = resolve_base(base, request)
    if base_path is None:
        raise AdapterBaseMissing(
            gettext_noop(
                "어댑터의 기본 모델을 찾을 수 없습니다: {base}. 기본 모델을 models/ 폴더나 Hugging Face 캐시에 넣으세요.",
                base=base[:200],
            ),
            f"base_model_name_or_path={base[:200]!r} is neither a listed model nor a folder",
        )
    if detect(base_path) == ADAPTER:
        raise AdapterBaseMissing(
            gettext_noop("어댑터의 기본 모델이 또 다른 어댑터입니다: {base}", base=base[:200]),
            f"{base_path} is an adapter folder",
        )
    check_folder_files(path, root)
    file = adapter_file(path, root)
    if file.name.endswith(".safetensors"):
        entries = {
            n: TensorInfo(1, e.dtype, e.numel, e.end - e.start, e.shape) for n, e in read_header(file, root).items()
        }
    else:
        entries = {n: TensorInfo(1, t.dtype, t.numel, t.nbytes, t.shape) for n, t in read_bin(file, root).items()}
    info: CheckpointInfo = base_preflight(dataclasses.replace(request, path=base_path))
    if info.plan is not None and peft_type not in PROMPT_TYPES:
        check_names(config, entries, info.plan.tensors, base)
    check_lora_numbers(config, entries)
    info.adapter = AdapterInfo(path, config, base, base_path, file, entries, merged=request.merge)
    return info


MAX_SCALING = 1e4  # lora_alpha / r: real adapters use 0.5–64; past this the outputs are inf or noise


def check_lora_numbers(config: dict[str, Any], tensors: dict[str, TensorInfo]) -> None:
    """LoRA's ``r`` and ``lora_alpha`` are numbers peft can use, and no rank exceeds what the
    tensors hold: peft would otherwise allocate ``r`` × width per module (r = 10^9 asks for
    terabytes) or fail deep inside with only an exception's class name to show."""
    if config.get("peft_type") not in ("LORA", "ADALORA"):
        return
    held = max((t.shape[0] for k, t in tensors.items() if k.endswith("lora_A.weight") and len(t.shape) == 2), default=0)
    ranks = {"r": config.get("r", 8)} | {f"rank_pattern[{k!r}]": v for k, v in _pattern(config, "rank_pattern")}
    for field_name, r in ranks.items():
        if type(r) is not int or r < 1:
            raise ConfigUnreadable(
                gettext_noop(
                    "{adapter_config}의 {field}(랭크)은 양의 정수여야 합니다: {value}",
                    adapter_config=ADAPTER_CONFIG, field=field_name[:60], value=repr(r)[:40],
                ),
                f"{field_name}={r!r:.40}",
            )  # fmt: skip
        if held and r > held:
            raise AdapterMismatch(
                gettext_noop(
                    "{adapter_config}의 {field}={value}이 어댑터 가중치의 랭크({held})보다 큽니다. 어댑터를 저장한 설정 그대로여야 합니다.",
                    adapter_config=ADAPTER_CONFIG, field=field_name[:60], value=r, held=held,
                ),
                f"{field_name}={r} but lora_A tensors hold rank {held} at most",
            )  # fmt: skip
    r0 = config.get("r", 8)
    alphas = {"lora_alpha": config.get("lora_alpha", 8)} | {
        f"alpha_pattern[{k!r}]": v for k, v in _pattern(config, "alpha_pattern")
    }
    for field_name, alpha in alphas.items():
        ok = isinstance(alpha, int | float) and not isinstance(alpha, bool) and math.isfinite(alpha)
        if not ok or abs(alpha / r0) > MAX_SCALING:
            raise ConfigUnreadable(
                gettext_noop(
                    "{adapter_config}의 {field} 값을 쓸 수 없습니다: {value}. 유한한 수이고 lora_alpha/r이 {max:g} 이하여야 합니다.",
                    adapter_config=ADAPTER_CONFIG, field=field_name[:60], value=repr(alpha)[:40], max=MAX_SCALING,
                ),
                f"{field_name}={alpha!r:.40} (r={r0})",
            )  # fmt: skip


def _pattern(config: dict[str, Any], key: str) -> list[tuple[str, Any]]:
    pattern = config.get(key)
    return [(str(k)[:40], v) for k, v in pattern.items()] if isinstance(pattern, dict) else []


PATTERN_TIMEOUT_S = 0.05  # per module name; a real target pattern matches in microseconds


def targeted(module: str, targets: Any) -> bool:
    if targets is None or targets == "all-linear":
        return True
    if isinstance(targets, str):
        try:
            # ``regex`` (transformers' own dependency) can stop a match: a catastrophic pattern
            # ("(.*.*.*.*)*XYZ") would otherwise hold the host's GIL for hours, here and in peft.
            return regex.fullmatch(targets, module, timeout=PATTERN_TIMEOUT_S) is not None
        except TimeoutError:
            raise AdapterMismatch(
                gettext_noop(
                    "어댑터 설정의 target_modules 정규식이 너무 복잡해 검사할 수 없습니다(모듈 이름 하나에 {ms}ms 초과). "
                    "모듈 이름 목록이나 단순한 패턴으로 바꾸세요.",
                    ms=int(PATTERN_TIMEOUT_S * 1000),
                ),
                f"target_modules pattern {targets[:200]!r} timed out on {module!r}",
            ) from None
        except regex.error:
            return True  # peft reports a bad pattern itself
    if isinstance(targets, list):
        return any(module == t or module.endswith(f".{t}") for t in targets if isinstance(t, str))
    return True


def check_names(config: dict[str, Any], tensors: dict[str, TensorInfo], base: dict[str, Any], name: str) -> None:
    """Every adapter tensor must sit on a module of the base (a target one, for LoRA's A/B), with fitting shapes."""
    modules = {k.removesuffix(".weight"): v.shape for k, v in base.items() if k.endswith(".weight")}
    unknown, untargeted, shapes = [], [], []
    for key, t in tensors.items():
        parts = key.removeprefix("base_model.model.").split(".")
        cut = next((i for i in range(len(parts) - 1, 0, -1) if ".".join(parts[:i]) in modules), 0)
        if not cut:
            unknown.append(key)
            continue
        module, rest = ".".join(parts[:cut]), ".".join(parts[cut:])
        shape = modules[module]
        if rest.startswith(("lora_", "hada_", "lokr_", "ia3_", "oft_", "boft_", "vera_")):
            if not targeted(module, config.get("target_modules")):
                untargeted.append(key)
            elif (
                len(shape) == 2
                and len(t.shape) == 2
                and (
                    (rest == "lora_A.weight" and t.shape[1] != shape[1])
                    or (rest == "lora_B.weight" and t.shape[0] != shape[0])
                )
            ):
                shapes.append(key)
        elif (
            rest in ("weight", "bias")
            and module + "." + rest in base
            and tuple(base[module + "." + rest].shape) != t.shape
        ):
            shapes.append(key)
    if unknown or untargeted or shapes:
        raise AdapterMismatch(
            gettext_noop(
                "어댑터가 기본 모델({name})과 맞지 않습니다: 기본 모델에 없는 모듈 {unknown}개, "
                "대상이 아닌 모듈 {untargeted}개, 모양 다름 {shapes}개. 예: {examples}",
                name=name[:120],
                unknown=len(unknown),
                untargeted=len(untargeted),
                shapes=len(shapes),
                examples=", ".join([*sorted(unknown)[:2], *sorted(untargeted)[:2], *sorted(shapes)[:2]]),
            ),
            f"unknown={sorted(unknown)[:SHOWN]} untargeted={sorted(untargeted)[:SHOWN]} shape={sorted(shapes)[:SHOWN]}",
        )


def base_request(request: LoadRequest, info: CheckpointInfo) -> LoadRequest:
    """For an adapter the stages load its base (keeping the adapter's name for the user)."""
    if info.adapter is None:
        return request
    return dataclasses.replace(request, path=info.path, name=request.display_name)
