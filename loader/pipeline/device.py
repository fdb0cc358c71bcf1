"""Device and dtype choice, free memory, and cache release (MPS first: Apple Silicon is home)."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from loader.pipeline.errors import DeviceUnavailable, InvalidOption
from loader.pipeline.i18n import gettext_noop

DEVICES = ("auto", "mps", "cuda", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_ELEMENT_SIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


def validate_options(device: str, dtype: str) -> None:
    if device not in DEVICES:
        raise InvalidOption(
            gettext_noop("알 수 없는 장치입니다: {device} (가능: {join})", device=device, join=", ".join(DEVICES)),
            f"device={device!r}",
        )
    if dtype not in DTYPES:
        raise InvalidOption(
            gettext_noop("알 수 없는 dtype입니다: {dtype} (가능: {join})", dtype=dtype, join=", ".join(DTYPES)),
            f"dtype={dtype!r}",
        )


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if _mps_available(torch):
            return "mps"
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if requested == "mps" and not _mps_available(torch):
        raise DeviceUnavailable(
            gettext_noop("MPS(Apple GPU)를 사용할 수 없습니다. 'auto' 또는 'cpu'를 선택하세요."),
            "torch.backends.mps.is_available() is False",
        )
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            gettext_noop("CUDA GPU를 사용할 수 없습니다. 'auto' 또는 'cpu'를 선택하세요."),
            "torch.cuda.is_available() is False",
        )
    return requested


def target_without_torch(requested: str) -> str | None:
    """The device ``resolve_device`` will choose, when it is known without importing torch (which
    takes seconds on the first load): "cpu" asked for, or "auto" on Linux with no GPU device node.
    None when only torch can tell."""
    if requested == "cpu":
        return "cpu"
    torch = sys.modules.get("torch")
    # A torch another thread is still importing (the host's start-up imports) is in sys.modules already:
    # asking it would wait for the whole import, which is what this function exists to avoid.
    if torch is not None and not getattr(getattr(torch, "__spec__", None), "_initializing", False):
        try:
            return resolve_device(requested)
        except DeviceUnavailable:
            return None
    gpu_nodes = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL
    if requested == "auto" and sys.platform.startswith("linux") and not any(map(os.path.exists, gpu_nodes)):
        return "cpu"
    return None


def available_bytes(device: str) -> int:
    """Memory a new model can use on ``device`` right now."""
    import torch

    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    if device == "mps":
        limit = int(torch.mps.recommended_max_memory())
        return max(limit - int(torch.mps.driver_allocated_memory()), 0)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency; keep a Linux fallback
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def release_memory(collect: bool = True) -> None:
    """Return freed tensors to the OS/driver: gc first (if asked), then the accelerator caches."""
    if collect:
        gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if _mps_available(torch):
        torch.mps.empty_cache()
    try:  # glibc keeps freed arenas; trim so RSS really drops after an unload
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
