"""Why a host died, in the words the job's error uses.

A negative return code is the signal; the kernel's OOM-kill counters (the system's
``/proc/vmstat`` and this cgroup's ``memory.events``) tell a kill for memory from a kill by hand.
"""

from __future__ import annotations

import signal
from pathlib import Path

_COUNTERS = (Path("/proc/vmstat"), Path("/sys/fs/cgroup/memory.events"))


def oom_kills() -> int:
    """How many processes the kernel has killed for memory (0 where it does not say)."""
    total = 0
    for path in _COUNTERS:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    total += int(value)
        except OSError:
            continue
    return total


def signal_name(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return f"exit {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def cause(returncode: int | None, oom_before: int) -> tuple[str, str]:
    """(error code, what happened): ``out_of_memory`` when the kernel killed for memory meanwhile."""
    name = signal_name(returncode)
    if returncode == -signal.SIGKILL and oom_kills() > oom_before:
        return "out_of_memory", name
    return "host_died", name
