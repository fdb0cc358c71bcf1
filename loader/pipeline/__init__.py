"""The staged model loader. Pure Python (no Django): the web runner and the CLI both wrap it."""

import os

# Set before tokenizers is imported anywhere: the forked-after-parallelism warning (FAQ Q2).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .errors import LoadCancelled, LoadError  # noqa: E402
from .events import ProgressEvent, Stage  # noqa: E402
from .request import LoadedModel, LoadRequest
from .resolve import preflight, warm_imports  # noqa: E402
from .slot import ModelSlot  # noqa: E402
from .stages import load_checkpoint  # noqa: E402

__all__ = [
    "LoadCancelled",
    "LoadError",
    "LoadRequest",
    "LoadedModel",
    "ModelSlot",
    "ProgressEvent",
    "Stage",
    "load_checkpoint",
    "preflight",
    "warm_imports",
]
