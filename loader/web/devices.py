"""Which devices this machine can load on, decided without torch (the web process never imports it).

The model host's ``resolve_device`` is the final word, but it answers only after a job has started
(and after torch's seconds-long import). The menu and the load API must not offer, then fail, a
device the machine plainly lacks: an NVIDIA driver leaves ``nvidia-smi`` or ``/proc/driver/nvidia``
behind, ROCm ``/dev/kfd``, WSL ``/dev/dxg``; MPS needs a Mac on Apple Silicon with macOS 14 or newer
(``mps_missing_reason`` knows the Mac-side words). When these signs are present but torch still
cannot use the device (a CPU-only torch build), the host refuses the load with its own reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

from loader.pipeline.device import DEVICES, mps_missing_reason
from loader.pipeline.i18n import Msg, gettext_noop

CUDA_SIGNS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL


@dataclass(frozen=True)
class DeviceOption:
    """One entry of the device menu: ``reason`` (a message) says why it cannot be picked."""

    value: str
    reason: Msg | None = None

    @property
    def available(self) -> bool:
        return self.reason is None


def cuda_driver_present() -> bool:
    """A GPU driver torch's ``cuda`` can use is installed (its tool or its device nodes exist)."""
    return bool(shutil.which("nvidia-smi")) or any(map(os.path.exists, CUDA_SIGNS))


def cuda_missing_reason() -> Msg | None:
    """None when a CUDA (or ROCm) driver is installed; otherwise why CUDA cannot be chosen."""
    if cuda_driver_present():
        return None
    return gettext_noop("이 컴퓨터에는 NVIDIA(CUDA) GPU 드라이버가 없습니다. 'auto' 또는 'cpu'를 선택하세요.")


def mps_unavailable_reason() -> Msg | None:
    """None on an Apple-Silicon Mac recent enough for MPS; otherwise why MPS cannot be chosen."""
    if sys.platform != "darwin":
        return gettext_noop("MPS는 Apple Silicon Mac의 GPU입니다. 이 컴퓨터는 Mac이 아닙니다.")
    reason = mps_missing_reason()  # Intel Mac, or macOS older than 14
    return reason if isinstance(reason, Msg) else None


def device_options() -> list[DeviceOption]:
    """Every device of ``DEVICES`` in menu order, each with why it is unavailable here (or None)."""
    reasons = {"cuda": cuda_missing_reason, "mps": mps_unavailable_reason}
    return [DeviceOption(value, reasons[value]() if value in reasons else None) for value in DEVICES]


def device_refusal(device: str) -> Msg | None:
    """Why a load on ``device`` must be refused before any job starts (None: let it go ahead)."""
    for option in device_options():
        if option.value == device:
            return option.reason
    return None
