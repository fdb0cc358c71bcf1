"""Whether a model fits a device: the one rule the load's refusal and the picker's hint share.

``need_bytes`` is what the checked checkpoint will take (its header bytes in the asked dtype, or
the config's meta skeleton when that is more, plus an adapter's tensors); ``room_bytes`` is the
device's free memory plus what the loaded model would give back when it sits on the same device
(a load unloads it first). A load is refused when the need is over the room; the picker also says
``tight`` past ``TIGHT_SHARE`` of it. No torch at import: the web process reads the verdict names.
"""

from __future__ import annotations

from typing import Any

from loader.pipeline import device as devices
from loader.pipeline.dtypes import element_size
from loader.pipeline.i18n import Msg, gettext_noop
from loader.pipeline.inspect.checkpoint import tensor_bytes

FITS, TIGHT, WONT_FIT, UNKNOWN = "fits", "tight", "wont_fit", "unknown"
# Past 80 % of the room the load still passes its check, but what the weights do not count (the
# tokenizer, conversion temporaries, a generation's KV cache and activations, the browser and the
# IDE growing in the same memory) is then likely to push the machine into swap or the OOM killer.
TIGHT_SHARE = 0.8


def need_bytes(info: Any, dtype: str) -> int:
    """Bytes the checked checkpoint ``info`` takes once loaded in ``dtype`` (a load request's)."""
    element = element_size(dtype)
    need = int(info.bytes_at(element))
    if info.plan is not None:  # what the config implies, in the dtype the model will hold
        need = max(need, int(info.plan.nbytes))
    if info.adapter is not None:  # the adapter sits beside its base (and merging needs both at once)
        need += tensor_bytes(info.adapter.tensors, element)
    return need


def freed_bytes(target: str, loaded: Any) -> int:
    """What the loaded model (a ``LoadedModel`` or None) gives back to ``target`` when it is unloaded."""
    if loaded is None or loaded.device != target:
        return 0
    return int(loaded.metadata.get("memory_bytes", 0))


def room_bytes(target: str, loaded: Any, max_bytes: int | None = None) -> int:
    """Memory a load on ``target`` may use: free now, plus the loaded model's when it goes first."""
    room = devices.available_bytes(target) + freed_bytes(target, loaded)
    return room if max_bytes is None else min(room, max_bytes)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def does_not_fit(need: int, room: int, target: str) -> Msg:
    return gettext_noop(
        "메모리가 부족합니다: {gb} 필요, {target}에서 {gb2} 사용 가능", gb=_gb(need), target=target, gb2=_gb(room)
    )


def verdict(need: int, room: int, target: str) -> tuple[str, Msg | None]:
    """``fits`` / ``tight`` / ``wont_fit`` and, for the last two, why in words."""
    if need > room:
        return WONT_FIT, does_not_fit(need, room, target)
    if need > TIGHT_SHARE * room:
        return TIGHT, gettext_noop(
            "여유가 적습니다: {gb} 필요, {target}에서 {gb2} 사용 가능({share}% 넘게 씀)",
            gb=_gb(need), target=target, gb2=_gb(room), share=round(TIGHT_SHARE * 100),
        )  # fmt: skip
    return FITS, None
