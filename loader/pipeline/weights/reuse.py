"""Build the model once: ``from_pretrained`` adopts the skeleton the preflight already built.

The preflight instantiates the model class on the meta device, in ``from_pretrained``'s own init
contexts, to check the checkpoint against it (skeleton.py). ``from_pretrained`` would then build
the same skeleton a second time: for a 0.5 B Llama that is ~11 ms of a ~45 ms hot load, and it
grows with depth. ``builder`` returns a subclass whose construction, inside ``from_pretrained``,
hands back the preflight's skeleton when (and only when) it is being asked for exactly that
model: same class, same default dtype, on the meta device, no extra model arguments and the same
configuration apart from the fields ``from_pretrained`` itself sets on its copy (the dtype and
the name), whose new values are then written into the skeleton's config in place so that every
submodule that holds it sees them. Anything else is built normally, so the worst case is today's cost.
Everything after the build (renames, tied weights, dtype plans, missing keys) is still
transformers' own loading; tests compare every tensor, buffer and config value with plain
``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What from_pretrained sets on its copy of the config before building the model.
OWN_FIELDS = frozenset({"dtype", "torch_dtype", "_name_or_path", "name_or_path"})


@dataclass
class Skeleton:
    """The preflight's meta model with what it was built from; taken at most once."""

    model_cls: Any
    config: Any
    dtype: str
    model: Any = None

    def take(self) -> Any:
        model, self.model = self.model, None
        return model


def _edits(mine: Any, before: Any, after: Any, out: list[tuple[Any, str, Any]]) -> bool:
    """Collect what from_pretrained changed on its copy (``after``) of our config (``before``) as
    edits to apply to ``mine`` (the built model's config); False if it changed anything else.

    Only the changes are applied: values the model's ``__init__`` set on its config (the attention
    implementation, say) must survive, as they would in a build from ``after``.
    """
    from transformers.configuration_utils import PretrainedConfig

    if type(before) is not type(after) or vars(before).keys() != vars(after).keys():
        return False
    for key, value in vars(after).items():
        old = vars(before)[key]
        if isinstance(value, PretrainedConfig) and isinstance(old, PretrainedConfig):
            held = vars(mine).get(key)
            if not isinstance(held, PretrainedConfig) or not _edits(held, old, value, out):
                return False
            continue
        try:
            same = bool(old == value)
        except Exception:  # a value without a plain equality: do not guess
            return False
        if not same:
            if key not in OWN_FIELDS:
                return False
            out.append((mine, key, value))
    return True


def _matches(skeleton: Skeleton, config: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    import torch
    from transformers.modeling_utils import get_torch_context_manager_or_global_device

    if args or kwargs or torch.get_default_dtype() != getattr(torch, skeleton.dtype):
        return False
    device = get_torch_context_manager_or_global_device()
    return device is not None and device.type == "meta"


def builder(model_cls: Any, skeleton: Skeleton | None) -> Any:
    """The class to call ``from_pretrained`` on: ``model_cls`` itself, or one that adopts ``skeleton``."""
    if skeleton is None or skeleton.model is None or skeleton.model_cls is not model_cls:
        return model_cls

    def __new__(cls: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        model, edits = skeleton.take(), list[tuple[Any, str, Any]]()
        fits = model is not None and _matches(skeleton, config, args, kwargs)
        if not fits or not _edits(model.config, skeleton.config, config, edits):
            # An instance of model_cls, not of this subclass: Python then runs no second __init__.
            return model_cls(config, *args, **kwargs)
        for target, key, value in edits:
            vars(target)[key] = value
        return model

    namespace = {"__new__": __new__, "__module__": model_cls.__module__, "__qualname__": model_cls.__qualname__}
    return type(model_cls.__name__, (model_cls,), namespace)
