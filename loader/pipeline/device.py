"""Device and dtype choice, free memory, and cache release (MPS first: Apple Silicon is home)."""

from __future__ import annotations

import gc
import os
import platform
import sys
from typing import Any

from loader.pipeline.dtypes import LOADABLE_NAMES
from loader.pipeline.errors import DeviceUnavailable, InvalidOption
from loader.pipeline.i18n import gettext_noop

DEVICES = ("auto", "mps", "cuda", "cpu")
DTYPES = ("auto", *LOADABLE_NAMES)


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


MPS_MIN_MACOS = (14, 0)  # current torch builds MPS for macOS 14+; bf16 on MPS needs 14 too


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def macos_version() -> tuple[int, int] | None:
    """(major, minor) on macOS, None elsewhere."""
    if sys.platform != "darwin":
        return None
    parts = (platform.mac_ver()[0] or "0").split(".")
    return int(parts[0]) if parts[0].isdigit() else 0, int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def mps_missing_reason() -> Any:
    """Why MPS is not there, in words a Mac user can act on (None when nothing specific is known)."""
    version = macos_version()
    if version is None:
        return None
    if platform.machine() != "arm64":
        return gettext_noop("이 Mac은 Intel Mac입니다. MPS 가속은 Apple Silicon(M1 이상)에서만 지원합니다.")
    if version < MPS_MIN_MACOS:
        return gettext_noop(
            "이 Mac의 macOS {found}에서는 PyTorch의 MPS를 쓸 수 없습니다(macOS 14 이상 필요). 'cpu'를 선택하세요.",
            found=f"{version[0]}.{version[1]}",
        )
    return None


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if _mps_available(torch):
            return "mps"
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if requested == "mps" and not _mps_available(torch):
        reason = mps_missing_reason()
        raise DeviceUnavailable(
            reason or gettext_noop("MPS(Apple GPU)를 사용할 수 없습니다. 'auto' 또는 'cpu'를 선택하세요."),
            f"torch.backends.mps.is_available() is False (macOS {platform.mac_ver()[0] or '-'})",
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
        # Metal's share of RAM knows nothing of the browser and the IDE in the same unified memory
        # (and torch's hard limit is 1.7x it: past the share it swaps instead of failing), so the
        # system's available memory bounds it too.
        limit = int(torch.mps.recommended_max_memory())
        return min(max(limit - int(torch.mps.driver_allocated_memory()), 0), _system_available())
    return _system_available()


def _system_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a dependency; keep a Linux fallback
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def mps_dtype(requested: str, planned: str, config_dtype: Any) -> tuple[str, Any]:
    """The dtype an MPS load uses and, when it is not what was asked for, why (a message).

    MPS holds no float64 (``auto`` over a float64 config loads float32, and says so) and, before
    macOS 14, no bfloat16 (asked for: refused; from ``auto``: float32, said so).
    """
    old_macos = (macos_version() or MPS_MIN_MACOS) < MPS_MIN_MACOS
    if requested == "bfloat16" and old_macos:
        raise InvalidOption(
            gettext_noop(
                "이 macOS에서는 MPS가 bfloat16을 지원하지 않습니다(macOS 14 이상 필요). float16이나 float32를 선택하세요."
            ),
            "bfloat16 on MPS before macOS 14",
        )
    if requested != "auto":
        return requested, None
    if str(config_dtype) == "float64":
        return "float32", gettext_noop("MPS는 float64를 지원하지 않아 float32로 불러왔습니다.")
    if planned == "bfloat16" and old_macos:
        return "float32", gettext_noop("이 macOS의 MPS는 bfloat16을 지원하지 않아 float32로 불러왔습니다.")
    return planned, None


def after_load(device: str) -> None:
    """Conversion temporaries must not stay counted as used: the next fit check reads the driver."""
    if device not in ("cuda", "mps"):
        return
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
    elif _mps_available(torch):
        torch.mps.synchronize()
        torch.mps.empty_cache()


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
    """The torch dtype for a loadable dtype name (one of ``LOADABLE_NAMES``)."""
    import torch

    if name not in LOADABLE_NAMES:
        raise KeyError(name)
    return getattr(torch, name)
