"""What the config implies, checked against what the checkpoint holds, before any weight exists.

transformers random-initializes every weight a checkpoint lacks, so a folder whose tensor names
match nothing (or whose config describes a 30 GB model next to a 16-byte shard) would "load"
with random weights or grow until the machine swaps. Here the model is built on the meta device
(no storage: the same init context ``from_pretrained`` uses), its state-dict names are matched
to the checkpoint's through transformers' own key renamings, and anything missing, unexpected
or of another shape is refused. The build itself is bounded: the config's layer/expert counts
are checked first, and a module-registration hook stops a build that grows past any real model.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from loader.pipeline.dtypes import FLOAT_CODES, LOADABLE_NAMES, name_of
from loader.pipeline.errors import ConfigUnreadable, WeightsMismatch
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.checkpoint import CheckpointInfo

# Bigger than any published model, small enough that the meta build stays well under a second.
COUNT_LIMITS = (("layer", 1024), ("expert", 4096), ("head", 65536))
MAX_MODULES = 50_000
BUILD_DEADLINE_S = 10.0
SHOWN_NAMES = 3


@dataclass(frozen=True)
class ExpectedTensor:
    shape: tuple[int, ...]
    dtype: str  # torch dtype name the model holds it in, e.g. "bfloat16"
    nbytes: int
    source: str | None  # the checkpoint key that fills it (None: tied or a buffer built at init)


@dataclass
class TensorPlan:
    """The model's tensors as the config implies them, and where each comes from."""

    model_class: str
    dtype: str
    tensors: dict[str, ExpectedTensor] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)  # target -> source, counted once
    # Checkpoint tensors the model has no place for (an extra head, a vision tower loaded as a
    # language model): left unread, as transformers leaves them, and named to the user.
    ignored: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for name, t in self.tensors.items() if name not in self.tied)


class _BuildTooBig(Exception):
    pass


def check_counts(config: dict[str, Any], where: str = "") -> None:
    """Refuse layer/expert/head counts no real model has, before a build could try them."""
    for key, value in config.items():
        if isinstance(value, dict):
            check_counts(value, f"{where}{key}.")
        elif type(value) is int:
            for word, limit in COUNT_LIMITS:
                if word in key.lower() and value > limit:
                    raise ConfigUnreadable(
                        gettext_noop(
                            "config.json의 값이 비현실적으로 큽니다: {where}{key} (최대 {limit})",
                            where=where,
                            key=key,
                            limit=limit,
                        ),
                        f"config {where}{key} exceeds {limit}",
                    )


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def check_layers(config: dict[str, Any], info: CheckpointInfo) -> None:
    """Refuse a config that needs more layers than the checkpoint could hold, before building it.

    Every layer has at least one tensor, and a checkpoint whose names carry layer indices has
    one index per layer: a config asking for more describes a model this checkpoint is not.
    """
    text_config = config.get("text_config")
    text: dict[str, Any] = text_config if isinstance(text_config, dict) else {}
    counts = [c["num_hidden_layers"] for c in (config, text) if type(c.get("num_hidden_layers")) is int]
    wanted: int = max(counts, default=0)
    indices = {m.group(1) for name in info.tensors if (m := _LAYER_INDEX.search(name))}
    held = len(indices) if indices else len(info.tensors)
    if wanted > held:
        raise WeightsMismatch(
            gettext_noop(
                "config.json은 층 {wanted}개를 말하지만 체크포인트에는 {held}개뿐입니다(무작위 가중치 방지).",
                wanted=wanted,
                held=held,
            ),
            f"config num_hidden_layers={wanted}, checkpoint holds {held} layer(s)",
        )


def target_dtype(requested: str, config: dict[str, Any], info: CheckpointInfo) -> str:
    """The dtype the model is built in: the request's, else the config's, else what most tensors hold
    (float64 and anything no device of ours loads become float32, as ``auto`` does)."""
    if requested in LOADABLE_NAMES:
        return requested
    for key in ("dtype", "torch_dtype"):
        if config.get(key) in LOADABLE_NAMES:
            return str(config[key])
    stored = [t.dtype for t in info.tensors.values() if t.dtype in FLOAT_CODES]
    name = name_of(max(set(stored), key=stored.count)) if stored else None
    return name if name in LOADABLE_NAMES else "float32"


def build_meta(model_cls: Any, config: Any, dtype: str) -> Any:
    """Instantiate ``model_cls`` on the meta device the way ``from_pretrained`` does, bounded."""
    import torch
    from transformers.initialization import no_init_weights
    from transformers.utils.generic import ContextManagers

    me, count, deadline = threading.get_ident(), [0], time.monotonic() + BUILD_DEADLINE_S

    def guard(_module: Any, _name: str, _sub: Any) -> None:
        if threading.get_ident() == me:
            count[0] += 1
            if count[0] > MAX_MODULES or (count[0] % 256 == 0 and time.monotonic() > deadline):
                raise _BuildTooBig()

    handle = torch.nn.modules.module.register_module_module_registration_hook(guard)
    try:
        contexts = model_cls.get_init_context(getattr(torch, dtype), False, False, None)
        # Initializing weights on the meta device computes nothing but still costs ~1/3 of the build.
        with ContextManagers([*contexts, no_init_weights()]):
            return model_cls(copy.deepcopy(config))
    except _BuildTooBig:
        raise ConfigUnreadable(
            gettext_noop("config.json이 설명하는 모델이 너무 큽니다(구성 요소 수 초과)."),
            f"model skeleton exceeded {MAX_MODULES} modules or {BUILD_DEADLINE_S:.0f} s",
        ) from None
    except Exception as exc:  # a config the model class cannot be built from
        raise ConfigUnreadable(
            gettext_noop("config.json으로 모델을 구성할 수 없습니다: {name}", name=type(exc).__name__),
            f"meta build failed: {exc!r}"[:500],
        ) from None
    finally:
        handle.remove()


def _renamer(model: Any, state: dict[str, Any]) -> tuple[Any, list[str]]:
    """transformers' own checkpoint-key renaming for this model, as ``key -> (target, converted)``."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    mapping = get_model_conversion_mapping(model, None, None)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    prefix = model.base_model_prefix

    def rename(key: str) -> tuple[str, bool]:
        target, pattern = rename_source_key(key, renamings, converters, prefix, state)
        if target not in state and key in state:
            target, pattern = rename_source_key(key, [], [], prefix, state)
        return target, pattern is not None

    targets = [p for c in converters for p in c.target_patterns]
    return rename, targets


def _shown(names: set[str] | list[str], more: str = " (+{})") -> str:
    listed = sorted(names)[:SHOWN_NAMES]
    text = ", ".join(n[:80].encode("ascii", "backslashreplace").decode() for n in listed)
    return text + (more.format(len(names) - len(listed)) if len(names) > len(listed) else "")


def compare(model: Any, info: CheckpointInfo, dtype: str) -> TensorPlan:
    """Match the checkpoint's tensors to the model's; refuse if weights would be left random."""
    state = model.state_dict()
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    if len(info.tensors) > 4 * len(state) + 1000:
        raise WeightsMismatch(
            gettext_noop(
                "체크포인트의 텐서 수({len})가 모델({len2})과 맞지 않습니다.", len=len(info.tensors), len2=len(state)
            ),
            f"{len(info.tensors)} checkpoint tensors for a model of {len(state)}",
        )
    rename, converter_targets = _renamer(model, state)
    plan = TensorPlan(type(model).__name__, dtype, tied=dict(getattr(model, "all_tied_weights_keys", {}) or {}))
    sources: dict[str, str] = {}
    unexpected, mismatched, converted = set(), set(), False
    for key, tensor in info.tensors.items():
        target, via_converter = rename(key)
        if target not in state:
            unexpected.add(key)
        elif not via_converter and tuple(state[target].shape) != tensor.shape:
            mismatched.add(key)
            sources[target] = key  # present, but wrong: reported as a shape, not as missing
        else:
            sources[target] = key
            converted |= via_converter
    missing = {n for n in params if n not in sources}
    for target, source in plan.tied.items():
        if target in sources or source in sources:
            missing -= {target, source}
    if converted:  # a fused/split target: transformers fills its siblings from the same source
        missing = {n for n in missing if not any(_search(p, n) for p in converter_targets)}
    if missing or unexpected:  # the model's own ignore patterns may excuse some
        report = SimpleNamespace(missing_keys=missing, unexpected_keys=unexpected)
        model._adjust_missing_and_unexpected_keys(report)
        missing, unexpected = report.missing_keys, report.unexpected_keys
    if missing or mismatched:  # random weights, or wrong ones: refused. Unexpected ones only: ignored.
        parts_en = [
            f"{label} {len(names)}: {_shown(names, ' and {} more')}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("shape differs", mismatched))
            if names
        ]
        raise WeightsMismatch(
            gettext_noop(
                "체크포인트의 가중치가 모델 구성과 맞지 않아 로드하지 않습니다(무작위 가중치 방지): "
                "없음 {missing}개, 예상 밖 {unexpected}개, 모양 다름 {mismatched}개. 예: {examples}",
                missing=len(missing), unexpected=len(unexpected), mismatched=len(mismatched),
                examples=_shown([*sorted(missing)[:2], *sorted(unexpected)[:2], *sorted(mismatched)[:2]]),
            ),
            f"{plan.model_class}: " + "; ".join(parts_en),
        )  # fmt: skip
    plan.ignored = sorted(unexpected)
    for name, t in state.items():
        numel = t.numel()
        plan.tensors[name] = ExpectedTensor(
            tuple(t.shape), str(t.dtype).removeprefix("torch."), numel * t.element_size(), sources.get(name)
        )
    return plan


def ignored_note(names: list[str]) -> str:
    """Tell the user which checkpoint tensors the model had no place for (they were not loaded)."""
    return gettext_noop(
        "체크포인트의 텐서 {count}개는 이 모델에 자리가 없어 읽지 않았습니다: {names}",
        count=len(names),
        names=_shown(names),
    )


def _search(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return pattern in name
