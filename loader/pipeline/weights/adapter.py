"""The adapter part of the weights stage: inject a checked PEFT adapter into the loaded base.

Runs after the base's weights are in (``adapters.preflight_adapter`` checked everything first):
peft builds the adapter modules, the tensors are read one by one (their bytes follow the base's
in the same bar, and a cancel is seen between them), and ``merge_and_unload`` folds them into the
base when the user asked to merge.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from loader.pipeline.errors import AdapterMismatch, LoadCancelled
from loader.pipeline.events import WeightsDetail
from loader.pipeline.i18n import gettext_noop
from loader.pipeline.inspect.adapters import SHOWN, AdapterInfo, targeted
from loader.pipeline.inspect.checkpoint import CheckpointInfo


class Reporter(Protocol):
    detail: WeightsDetail
    weights_span: tuple[float, float]

    def report(self, fraction: float, force: bool = False) -> None: ...

    def named_step(self, step: str, fraction: float, **fmt: str) -> None: ...


def _read_tensors(adapter: AdapterInfo, on_bytes: Any, cancel: threading.Event) -> dict[str, Any]:
    import torch

    if adapter.file.name.endswith(".bin"):
        state = torch.load(str(adapter.file), map_location="cpu", weights_only=True)  # checked in the preflight
        on_bytes(adapter.nbytes)
        return dict(state)
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(adapter.file), framework="pt", device="cpu") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
            if cancel.is_set():
                raise LoadCancelled()
            out[key] = fh.get_tensor(key)
            on_bytes(adapter.tensors[key].nbytes if key in adapter.tensors else 0)
    return out


def attach_adapter(model: Any, info: CheckpointInfo, rep: Reporter, cancel: threading.Event) -> Any:
    """Inject the adapter into the loaded base, fill it tensor by tensor, merge it if asked."""
    adapter: AdapterInfo = info.adapter
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING, PeftModel, set_peft_model_state_dict
    from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING

    detail, base_bytes = rep.detail, info.total_bytes
    rep.weights_span = (0.0, 1.0)
    done = [0]

    def on_bytes(n: int) -> None:
        done[0] += n
        detail.bytes_done = base_bytes + done[0]
        rep.report(detail.bytes_done / max(detail.bytes_total, 1))

    try:
        peft_config = PEFT_TYPE_TO_CONFIG_MAPPING[adapter.config["peft_type"]].from_pretrained(str(adapter.path))
        peft_config.inference_mode = True
        if isinstance(peft_config.target_modules, str) and peft_config.target_modules != "all-linear":
            # peft would match the pattern with ``re``, unbounded: hand it the names our bounded match chose.
            pattern = peft_config.target_modules
            peft_config.target_modules = {
                name for name, _m in model.named_modules() if name and targeted(name, pattern)
            }
        cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(str(peft_config.task_type), PeftModel)
        wrapped = cls(model, peft_config, adapter_name="default")
        result = set_peft_model_state_dict(wrapped, _read_tensors(adapter, on_bytes, cancel), adapter_name="default")
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if "default" in k or "lora" in k]
        if unexpected:
            raise AdapterMismatch(
                gettext_noop(
                    "어댑터의 텐서 일부가 기본 모델에 들어가지 않았습니다: {join}", join=", ".join(unexpected[:SHOWN])
                ),
                f"unexpected adapter keys: {unexpected[:10]}",
            )
        wrapped.eval()
        if adapter.merged:
            # Every byte is read: the merge is compute, not reading. Say so, and no "0 s
            # remaining" (an ETA from bytes) while the bar waits for it.
            detail.eta_s = None
            rep.named_step("merging", 1.0)
            return wrapped.merge_and_unload()
        return wrapped
    except (LoadCancelled, AdapterMismatch):
        raise
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise AdapterMismatch(
            gettext_noop(
                "어댑터를 기본 모델에 적용할 수 없습니다({name}): {reason}",
                name=type(exc).__name__,
                reason=(str(exc).strip().splitlines() or ["?"])[0][:200],
            ),
            repr(exc)[:1000],
        ) from exc
