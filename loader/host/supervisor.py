"""The web side's handle on its model host: spawn, drive a load, cancel by kill, see it die.

One ``Host`` per server (and one per ``loadmodel``). It spawns ``python -m loader.host`` with a
socket pair, reads the host's frames on a thread of its own into the running load's mailbox,
and turns every way a host can end into a typed outcome: a cancel the host does not honour
within the grace is a kill and a fresh host; a death (signal, the kernel's OOM killer) fails the
load as ``host_died``/``out_of_memory``; garbage on the wire fails it as ``internal``. Memory a
host keeps after an unload (beyond ``RECYCLE_*`` of a fresh host's) is returned by recycling it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loader.host import deaths, protocol
from loader.host.fits import FitBoard

log = logging.getLogger("loader.host")
ROOT = Path(__file__).resolve().parent.parent.parent
RECYCLE_SHARE, RECYCLE_BYTES = 0.10, 200_000_000
MAILBOX_MAX = 10_000  # frames waiting for the job thread; past this the host is flooding us
MAILBOX_BYTES = 32 << 20
REPLY_TIMEOUT_S = 30.0
READY_LINE = "model host ready in"  # the server's log line operators (and the test harness) wait for
FINAL = ("loaded", "failed", "cancelled")
# Every host is spawned from this one long-lived thread: Linux's PR_SET_PDEATHSIG (the host dies
# with its parent) fires when the spawning *thread* ends, and a start-up thread ends at once.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-host-spawner")


class HostBusy(Exception):
    """A load runs in the host; it cannot unload or take a second load."""


@dataclass
class Outcome:
    state: str  # loaded | failed | cancelled
    model: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # {code, detail} and, for the pipeline's errors, template/params
    dropped: bool = False  # the model held before this load is gone
    previous: str = ""  # the name of the model held before this load
    killed: str = ""  # why the host was killed or died during this load ("" when it lived)


@dataclass
class _Mailbox:
    """A load's incoming frames; a progress frame not yet taken is replaced by a newer one of the
    same stage. What waits is bounded in frames and bytes: past either, the host is flooding us."""

    items: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    size: int = 0

    def put(self, message: dict[str, Any], nbytes: int = 0) -> None:
        with self.cond:
            last = self.items[-1][0] if self.items else {}
            if last.get("t") == message.get("t") == "event" and last["event"]["stage"] == message["event"]["stage"]:
                self.size -= self.items[-1][1]
                self.items[-1] = (message, nbytes)  # an unread progress frame of the same stage is superseded
            elif len(self.items) >= MAILBOX_MAX or self.size + nbytes > MAILBOX_BYTES:
                self.items.append(
                    ({"t": "garbage", "detail": f"over {MAILBOX_MAX} frames or {MAILBOX_BYTES} bytes unread"}, 0)
                )
                nbytes = 0
            else:
                self.items.append((message, nbytes))
            self.size += nbytes
            self.cond.notify_all()

    def get(self, timeout: float) -> dict[str, Any] | None:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            if not self.items:
                return None
            message, nbytes = self.items.pop(0)
            self.size -= nbytes
            return message


def _valid(message: dict[str, Any]) -> bool:
    """The shape of every frame the web side acts on; anything else is garbage."""
    kind = message.get("t")
    if kind in ("hello", "ready", "unloaded", "noop"):
        return True
    if not isinstance(message.get("id"), int):
        return False
    if kind == "event":
        event = message.get("event")
        return (
            isinstance(event, dict) and isinstance(event.get("stage"), str)
            and isinstance(event.get("percent"), int | float) and isinstance(event.get("message"), str)
            and isinstance(event.get("detail"), dict) and isinstance(event.get("timings"), dict)
        )  # fmt: skip
    if kind == "loaded":
        return isinstance(message.get("model"), dict)
    if kind == "failed":
        return isinstance(message.get("error"), dict)
    if kind == "gen":  # a generation's progress or end (generation.py)
        return isinstance(message.get("state"), str) and isinstance(message.get("text", ""), str)
    if kind == "fit":  # the picker's memory estimates (fits.py)
        return isinstance(message.get("results"), dict) and isinstance(message.get("available", 0), int)
    return kind in ("dropped", "cancelled")


class _Process:
    """One spawned host: its Popen, socket, reader thread and what it told us."""

    def __init__(self, owner: Host) -> None:
        parent, child = socket.socketpair()
        self.oom_before = deaths.oom_kills()
        try:
            self.proc = _SPAWNER.submit(
                subprocess.Popen,
                [*owner.argv, str(child.fileno())],
                pass_fds=(child.fileno(),), cwd=ROOT, stdin=subprocess.DEVNULL,
                stdout=sys.__stderr__ or subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C is for us; we decide what the host does
            ).result()  # fmt: skip
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.sock, self.owner = parent, owner
        self.ready = threading.Event()
        self.fresh_rss = 0
        self.dead = threading.Event()
        self.killed_for = ""
        self.returncode: int | None = None
        self.unloading = False
        self.replies: _Mailbox = _Mailbox()
        threading.Thread(target=self._read, name=f"model-host-{self.proc.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict[str, Any]) -> bool:
        try:
            protocol.send(self.sock, message)
            return True
        except OSError:
            return False

    def kill(self, reason: str) -> None:
        self.killed_for = self.killed_for or reason
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.dead.wait(10)

    def _read(self) -> None:
        try:
            while True:
                message, nbytes = protocol.receive_sized(self.sock)
                if not _valid(message):
                    raise protocol.ProtocolError(f"a frame of an unknown shape: {str(message)[:200]}")
                kind = message.get("t")
                if kind == "ready":
                    self.fresh_rss = int(message.get("rss") or 0)
                    self.ready.set()
                elif kind == "fit":
                    self.owner.fits.deliver(message)
                elif kind == "unloaded":
                    if self.unloading:  # an answer nobody asked for is dropped, never kept
                        self.replies.put(message)
                elif kind not in ("hello", "noop"):
                    self.owner._deliver(self, message, nbytes)
        except (protocol.Closed, OSError):  # it exited, was killed, or reset the connection
            pass
        except Exception as exc:  # garbage, a frame of the wrong shape, a callback that failed
            with contextlib.suppress(OSError):
                self.proc.kill()  # first: whatever happens next, wait() below must not wait on a live host
            if not self.killed_for:
                log.error("model host %s sent garbage, killing it: %s", self.pid, exc)
                self.killed_for = "garbage"
                with contextlib.suppress(Exception):
                    self.owner._deliver(self, {"t": "garbage", "detail": str(exc)[:2000]}, 0)
        finally:
            self.returncode = self.proc.wait()
            self.sock.close()
            self.dead.set()
            self.owner._died(self)


HOST_ARGV = (sys.executable, "-m", "loader.host")


class Host:
    def __init__(
        self, on_lost: Callable[[dict[str, Any], str], None] | None = None, argv: tuple[str, ...] = HOST_ARGV
    ) -> None:
        self.argv = argv  # the host program; the socket's fd number is appended
        self._lock = threading.Lock()  # the process, the following load and the model fields
        self._load_lock = threading.Lock()  # one load or unload at a time
        self._process: _Process | None = None
        self._following: tuple[_Process, _Mailbox] | None = None  # the load being followed, and its host
        self.model: dict[str, Any] | None = None  # what the host holds (its summary)
        self.on_lost = on_lost  # (model, why) when a host dies holding a model outside a load
        self.fits = FitBoard()  # the picker's memory estimates, asked of this host
        self._exit_hook = False

    # --- the process --------------------------------------------------------------------------------

    def start(self) -> _Process:
        """The live host, spawned now if there is none (returns at once; it imports meanwhile)."""
        with self._lock:
            process = self._process
            if process is None or process.dead.is_set() or process.killed_for:
                if not self._exit_hook:  # the host never outlives this process
                    atexit.register(self.stop)
                    self._exit_hook = True
                process = self._process = _Process(self)
            return process

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and not process.dead.is_set() else None

    @property
    def ready(self) -> bool:
        process = self._process
        return process is not None and process.ready.is_set() and not process.dead.is_set()

    @property
    def busy(self) -> bool:
        return self._load_lock.locked()

    def holds(self, model: dict[str, Any] | None) -> bool:
        """Whether ``model`` is still what a live host holds (it may have died since it loaded)."""
        return model is not None and self.model is model and self.pid is not None

    def stop(self) -> None:
        """End the host (server or CLI exit): its memory goes back with it."""
        process = self._process
        if process is not None and not process.dead.is_set():
            process.kill("stopped")

    def recycle(self, reason: str) -> None:
        process = self._process
        if process is not None:
            process.kill(reason)
        self._forget_model()
        self.start()

    def _deliver(self, process: _Process, message: dict[str, Any], nbytes: int) -> None:
        with self._lock:
            following = self._following
        if following is not None and following[0] is process:
            following[1].put(message, nbytes)
        elif message.get("t") not in ("event", "dropped", "gen", *FINAL):
            log.warning("model host %s: unexpected %r outside a load", process.pid, message.get("t"))

    def _died(self, process: _Process) -> None:
        code, signal = deaths.cause(process.returncode, process.oom_before)
        if process.killed_for == "stopped":
            pass  # our own exit: logging may already be closed
        elif process.killed_for:
            log.info("model host %s ended (%s: %s)", process.pid, process.killed_for, signal)
        else:
            log.error("model host %s died (%s, %s)", process.pid, signal, code)
        with self._lock:
            following = self._following
            if following is not None and following[0] is process:  # the load that follows it says why
                following[1].put({"t": "died", "code": code, "signal": signal, "killed_for": process.killed_for})
                return
            if process is not self._process:
                return  # an old host (already replaced): what it held was forgotten then
            model, self.model = self.model, None
        if model is not None and not process.killed_for and self.on_lost is not None:
            self.on_lost(model, f"{code}:{signal}")

    # --- a load -------------------------------------------------------------------------------------

    def load(
        self, job_id: int, spec: dict[str, Any], *, on_event: Callable[[dict[str, Any]], None],
        on_dropped: Callable[[], None], on_waiting: Callable[[float], None], should_cancel: Callable[[], bool],
        grace_s: float,
    ) -> Outcome:  # fmt: skip
        """Run one load in the host; returns how it ended. ``on_waiting(elapsed)`` is called
        about every 0.25 s while the host is still starting (importing)."""
        if not self._load_lock.acquire(blocking=False):
            raise HostBusy()
        try:
            process = self.start()
            process.oom_before = deaths.oom_kills()
            mailbox = _Mailbox()
            with self._lock:
                self._following = (process, mailbox)
                previous = self.model
            try:
                if not process.send({"op": "load", "id": job_id, "request": spec}):
                    mailbox.put({"t": "died", "code": "host_died", "signal": "socket closed", "killed_for": ""})
                outcome = self._follow(
                    process, job_id, mailbox, previous is not None, on_event, on_dropped, on_waiting, should_cancel,
                    grace_s,
                )  # fmt: skip
            except Exception:  # a callback or a frame we could not handle: this host's state is unknown
                log.exception("job %s: following the host failed; replacing it", job_id)
                self.recycle("internal")
                outcome = Outcome("failed", error={"code": "internal", "detail": traceback.format_exc()},
                                  dropped=previous is not None, killed="internal")  # fmt: skip
            finally:
                with self._lock:
                    self._following = None
            outcome.previous = str((previous or {}).get("name", ""))
            return outcome
        finally:
            self._load_lock.release()

    def _follow(
        self, process: _Process, job_id: int, mailbox: _Mailbox, held: bool, on_event: Callable[[dict[str, Any]], None],
        on_dropped: Callable[[], None], on_waiting: Callable[[float], None], should_cancel: Callable[[], bool],
        grace_s: float,
    ) -> Outcome:  # fmt: skip
        started = waited = time.monotonic()
        cancel_at = 0.0
        silent_since = 0.0  # the host's socket is closed and nothing more is coming
        while True:
            message = mailbox.get(0.1)  # a cancel is seen within 0.1 s
            now = time.monotonic()
            if not process.ready.is_set() and now - waited >= 0.25:
                waited = now
                on_waiting(waited - started)
            if message is None and process.dead.is_set():
                silent_since = silent_since or now
                if now - silent_since > 1.0:  # its "died" frame was lost: say so anyway
                    code, signal = deaths.cause(process.returncode, process.oom_before)
                    message = {"t": "died", "code": code, "signal": signal, "killed_for": process.killed_for}
            if message is not None:
                kind = message.get("t")
                if message.get("id", job_id) != job_id:
                    continue  # a late frame of an earlier load
                if kind == "event":
                    on_event(message["event"])
                elif kind == "dropped":
                    self._forget_model()
                    on_dropped()
                elif kind in FINAL:
                    return self._final(message, held)
                elif kind == "died":
                    self._forget_model()
                    if cancel_at or message.get("killed_for") == "cancel":  # killed after the cancel
                        return Outcome("cancelled", dropped=held, killed="cancel")
                    error = {"code": message["code"], "signal": message["signal"]}
                    return Outcome("failed", error=error, dropped=held, killed=message["signal"])
                elif kind == "garbage":
                    self.recycle("garbage")
                    error = {"code": "internal", "detail": message["detail"]}
                    return Outcome("failed", error=error, dropped=held, killed="garbage")
            if not cancel_at and should_cancel():
                cancel_at = time.monotonic()
                process.send({"op": "cancel", "id": job_id})
            if cancel_at and time.monotonic() - cancel_at > grace_s:
                log.warning("job %s: the host did not stop %.1f s after cancel; killing it", job_id, grace_s)
                self.recycle("cancel")  # a fresh one imports for the next load meanwhile
                return Outcome("cancelled", dropped=held, killed="cancel")

    def _final(self, message: dict[str, Any], held: bool) -> Outcome:
        kind = message["t"]
        if kind == "loaded":
            with self._lock:
                self.model = message["model"]
            return Outcome("loaded", model=self.model, dropped=held)
        dropped = bool(message.get("dropped")) and held
        if dropped:
            self._forget_model()
        if kind == "failed":
            return Outcome("failed", error=message["error"], dropped=dropped)
        return Outcome("cancelled", dropped=dropped)

    def _forget_model(self) -> None:
        with self._lock:
            self.model = None

    # --- unload -------------------------------------------------------------------------------------

    def unload(self) -> bool:
        """Drop the host's model; the host stays warm unless it keeps too much memory."""
        if not self._load_lock.acquire(blocking=False):
            raise HostBusy()
        try:
            process = self._process
            if process is None or process.dead.is_set() or self.model is None:
                self._forget_model()
                return False
            process.unloading = True
            try:
                if not process.send({"op": "unload"}):
                    self._forget_model()
                    return True
                reply = None
                deadline = time.monotonic() + REPLY_TIMEOUT_S
                while reply is None and time.monotonic() < deadline and not process.dead.is_set():
                    reply = process.replies.get(0.25)
            finally:
                process.unloading = False
            self._forget_model()
            if reply is None or reply.get("busy"):
                self.recycle("unload did not answer")  # the model must go: the process goes with it
                return True
            rss, base = int(reply.get("rss") or 0), int(reply.get("baseline") or process.fresh_rss)
            if base and rss > base + max(RECYCLE_SHARE * base, RECYCLE_BYTES):
                log.info(
                    "model host %s keeps %d MB after unload (baseline %d MB): recycling",
                    process.pid,
                    rss >> 20,
                    base >> 20,
                )
                self.recycle("memory after unload")
            return bool(reply.get("had"))
        finally:
            self._load_lock.release()
