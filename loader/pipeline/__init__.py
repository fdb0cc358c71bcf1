"""The staged model loader. Pure Python (no Django): it runs in the model host (``loader.host``).

The names below are resolved on first use (PEP 562), so importing a light module of the
package (``events``, ``errors``, ``i18n``: what the web process and ``loadmodel``'s first line
need) does not import the whole loader.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Set before tokenizers is imported anywhere: the forked-after-parallelism warning (FAQ Q2).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_EXPORTS = {
    "LoadCancelled": "errors",
    "LoadError": "errors",
    "ProgressEvent": "events",
    "Stage": "events",
    "LoadRequest": "request",
    "LoadedModel": "request",
    "warm_imports": "preflight",
    "ModelSlot": "slot",
    "load_checkpoint": "stages",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
