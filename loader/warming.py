"""Warming torch + transformers in a serving process without holding up its requests.

The imports take ~4 s right after start, in a thread beside the serving loop, and a click on
"load" may come at any moment of them. Three things made such a click wait (measured with a
loop-lag probe and a tracing wrapper, bench/results/cpu-event_trace-s14.txt and
cpu-first_message-s14.txt):

- **Full garbage collections.** The imports grow the heap by a quarter again and again, and
  each time the collector ran over all of it: six pauses of 40-230 ms in one start-up, every
  thread held. The collector is off while the imports run (they leave next to no cyclic
  garbage; what other threads make meanwhile is collected once it is back on), then the
  imported objects are frozen out of it.
- **Linking libtorch.** ``import torch._C`` dlopens libtorch_cpu (0.2-0.3 s of relocations
  and C++ static initializers) holding the GIL. It is dlopened first through a ctypes
  foreign call, which releases the GIL (``_link_torch_without_the_gil``).
- **Sharing the GIL.** The import is Python bytecode most of the time; a request thread gets
  the GIL back only every switch interval (5 ms), after each system call it makes. While an
  HTTP request is being answered the importing thread waits before each module it imports,
  until ``GIVE_WAY_S`` after the newest request began (after that a request may be waiting on
  the import itself) and ``GIVE_WAY_TOTAL_S`` in all (requests that never stop cannot starve
  it). Per request, not per stretch: a status request arriving while slow list requests run
  is given way too.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

log = logging.getLogger("loader.warming")
GIVE_WAY_S = 0.25  # a request answered with the import paused takes 15-50 ms; one waiting on a module the
# import holds (it cannot tell) waits this much longer at most
GIVE_WAY_TOTAL_S = 2.0


class Requests:
    """HTTP requests being answered; counted on the serving loop (``ServerStartup``)."""

    def __init__(self) -> None:
        self._count = 0
        self._latest = 0.0  # when the newest request began
        self.given = 0.0  # seconds the import has waited so far
        self.idle = threading.Event()
        self.idle.set()

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        self._latest = time.monotonic()
        if self._count == 0:
            self.idle.clear()
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self.idle.set()

    def give_way(self) -> None:
        """Wait while requests are answered, up to ``GIVE_WAY_S`` after the newest began and
        ``GIVE_WAY_TOTAL_S`` over the whole warming."""
        if not self.idle.is_set():
            now = time.monotonic()
            left = min(self._latest + GIVE_WAY_S - now, GIVE_WAY_TOTAL_S - self.given)
            if left > 0:
                self.idle.wait(left)
                self.given += time.monotonic() - now


REQUESTS = Requests()


class _GiveWay(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` while warming: finds nothing, only pauses the warming thread."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if threading.get_ident() == self.thread_id:
            REQUESTS.give_way()
        return None


def warm(is_idle: Callable[[], bool] | None = None) -> bool:
    """Import the heavy modules; freeze them out of the collector if ``is_idle()`` (no load has
    started: its model must stay collectable). False if the imports failed (logged)."""
    from .pipeline.resolve import warm_imports

    finder = _GiveWay(threading.get_ident())
    sys.meta_path.insert(0, finder)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _link_torch_without_the_gil()
        warm_imports()
        return True
    except Exception:
        log.exception("warming imports failed (the first load will import instead)")
        return False
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        if is_idle is None or is_idle():
            gc.freeze()
        if was_enabled:
            gc.enable()


def _link_torch_without_the_gil() -> None:
    """Load torch's biggest native library with the GIL released, before ``import torch``.

    ``dlopen`` is called in torch's own order: its global-deps library first with RTLD_GLOBAL
    as torch loads it, then libtorch_cpu with RTLD_LOCAL as a dependency of ``torch._C`` is
    loaded (it needs no CUDA library; torch's CUDA preloads still run before ``torch._C``).
    The import then finds both loaded. Nothing is imported here; anything unexpected (another
    platform or layout) leaves the work to the import.
    """
    # Linux only: how macOS's dyld treats a library opened ahead by its path was not checked on a
    # Mac, and a second copy of libtorch in one process would break torch; there the import links it.
    if "torch" in sys.modules or not sys.platform.startswith("linux") or os.getenv("TORCH_USE_RTLD_GLOBAL"):
        return
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return
        lib, ext = Path(spec.origin).parent / "lib", ".so"
        dlopen = ctypes.CDLL(None).dlopen
        dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
        for name, scope in (("libtorch_global_deps", os.RTLD_GLOBAL), ("libtorch_cpu", os.RTLD_LOCAL)):
            path = lib / f"{name}{ext}"
            if not path.is_file() or not dlopen(os.fsencode(path), os.RTLD_NOW | scope):
                return  # torch's import does it (and reports any error) the usual way
    except (OSError, AttributeError, ValueError, ImportError) as exc:
        log.debug("torch's libraries not linked ahead: %r", exc)
