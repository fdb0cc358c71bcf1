"""The model-host process: imports torch/transformers, holds the model, runs the staged load.

Started by ``supervisor.Host`` as ``python -m loader.host FD`` (a fresh interpreter), it talks
over the socket ``FD`` (``protocol``). Commands: ``load``, ``cancel``, ``unload``, ``generate``,
``gen_cancel``, ``fit`` (the picker's memory estimates, ``estimator``), ``exit``.
It starts importing the heavy libraries at once, so a click after the server starts finds them
ready or nearly so. It ignores Ctrl-C (the terminal's signal is for its parent, which decides)
and dies with its parent: on Linux by ``PR_SET_PDEATHSIG``, elsewhere when the socket closes.
No Django here: the pipeline is pure Python.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from loader.host import protocol
from loader.host.estimator import Estimator, estimate
from loader.pipeline.errors import LoadCancelled, LoadError
from loader.pipeline.events import ProgressEvent
from loader.pipeline.request import LoadRequest

log = logging.getLogger("loader.host")


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the prctl
        os._exit(0)


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


class Outbox:
    """Sends from any thread, one frame at a time; a parent that is gone ends this process."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        try:
            frame = protocol.encode(message)
        except protocol.ProtocolError as exc:  # a giant traceback or metadata: say so in a frame that fits
            log.error("frame too large (%s); sending a shortened one", exc)
            frame = protocol.encode(_shortened(message, str(exc)))
        try:
            with self.lock:
                self.sock.sendall(frame)
        except OSError:
            os._exit(0)  # nobody is listening: the model must not outlive its server


def _shortened(message: dict[str, Any], why: str) -> dict[str, Any]:
    if message.get("t") == "loaded":  # the model is in; its metadata is what was too large
        model = dict(message.get("model") or {})
        model["metadata"] = {"note": f"metadata dropped: {why}"}
        return {**message, "model": model}
    if message.get("t") == "failed":
        error = dict(message.get("error") or {})
        error["detail"] = str(error.get("detail", ""))[:20000]
        error["params"] = {k: str(v)[:500] for k, v in (error.get("params") or {}).items()}
        return {**message, "error": error}
    return {"t": "event", "id": message.get("id"), "event": {}} if message.get("t") == "event" else {"t": "noop"}


class Host:
    def __init__(self, out: Outbox) -> None:
        from loader.pipeline.slot import ModelSlot

        self.out = out
        self.slot = ModelSlot()
        self.cancels: dict[int, threading.Event] = {}
        self.gen_cancels: dict[int, threading.Event] = {}
        self.fresh_rss = _rss()
        # RSS after the first unload of a model on each device: CUDA/MPS keep a context (and CUDA the
        # pinned ring) on purpose, so a host that used them is judged against itself, not a fresh one.
        self.baselines: dict[str, int] = {}
        self.device = ""
        self.estimator = Estimator()
        self.fit_lock = threading.Lock()  # one ask at a time; a newer one stops the older (fit_stop)
        self.fit_stop = threading.Event()

    def imports(self) -> None:
        from loader.pipeline.preflight import warm_imports

        started = time.monotonic()
        try:
            warm_imports()
        except Exception:
            log.exception("importing the libraries failed (the load will say why)")
        self.fresh_rss = _rss()
        self.out.send({"t": "ready", "import_s": round(time.monotonic() - started, 3), "rss": self.fresh_rss})

    def load(self, job_id: int, spec: dict[str, Any]) -> None:
        cancel = self.cancels.setdefault(job_id, threading.Event())
        threading.Thread(target=self._load, args=(job_id, spec, cancel), name=f"load-{job_id}", daemon=True).start()

    def _load(self, job_id: int, spec: dict[str, Any], cancel: threading.Event) -> None:
        had = held = self.slot.loaded is not None  # held: the drop is still to be announced

        def on_event(event: ProgressEvent) -> None:
            nonlocal held
            if held and self.slot.loaded is None:  # the previous model was just dropped for this load
                held = False
                self.out.send({"t": "dropped", "id": job_id})
            self.out.send({"t": "event", "id": job_id, "event": event.to_dict(), "sent_at": time.time()})

        try:
            request = LoadRequest.from_spec(spec)
            loaded = self.slot.load(request, on_event, cancel)
        except LoadCancelled:
            self.out.send({"t": "cancelled", "id": job_id, "dropped": had and self.slot.loaded is None})
        except LoadError as exc:
            self.out.send({"t": "failed", "id": job_id, "error": exc.to_dict(), "dropped": self.slot.loaded is None})
        except BaseException as exc:  # a bug or an exotic checkpoint: typed as internal by the web side
            detail = "".join(traceback.format_exception(exc))
            dropped = had and self.slot.loaded is None
            self.out.send(
                {"t": "failed", "id": job_id, "error": {"code": "internal", "detail": detail}, "dropped": dropped}
            )
        else:
            self.device = loaded.device
            summary = self.slot.summary() or {}
            self.out.send({"t": "loaded", "id": job_id, "model": summary, "rss": _rss()})
            del loaded
        finally:
            self.cancels.pop(job_id, None)

    def generate(self, gen_id: int, spec: dict[str, Any]) -> None:
        cancel = self.gen_cancels.setdefault(gen_id, threading.Event())
        threading.Thread(target=self._generate, args=(gen_id, spec, cancel), name=f"gen-{gen_id}", daemon=True).start()

    def _generate(self, gen_id: int, spec: dict[str, Any], cancel: threading.Event) -> None:
        from loader.pipeline.generate import GenerationRequest, Progress, generate

        def update(progress: Progress) -> None:
            self.out.send({"t": "gen", "id": gen_id, "state": "running", **progress.to_dict()})

        loaded = self.slot.loaded
        try:
            if loaded is None:
                self.out.send({"t": "gen", "id": gen_id, "state": "failed", "error": {"code": "no_model"}})
                return
            request = GenerationRequest(str(spec["prompt"]), int(spec["max_new_tokens"]), bool(spec.get("chat")))
            result = generate(loaded, request, update, cancel)
            state = "cancelled" if cancel.is_set() else "done"
            self.out.send({"t": "gen", "id": gen_id, "state": state, **result.to_dict()})
        except BaseException as exc:  # the model's own error (a tokenizer without a pad token…): said as text
            detail = "".join(traceback.format_exception(exc))
            error = {"code": "generation_failed", "detail": detail[-20000:], "reason": str(exc)[:300]}
            self.out.send({"t": "gen", "id": gen_id, "state": "failed", "error": error})
        finally:
            del loaded
            self.gen_cancels.pop(gen_id, None)

    def fit(self, fit_id: int, ask: dict[str, Any]) -> None:
        self.fit_stop.set()  # the ask before this one is stale: it stops between two models
        stop = self.fit_stop = threading.Event()
        threading.Thread(target=self._fit, args=(fit_id, ask, stop), name=f"fit-{fit_id}", daemon=True).start()

    def _fit(self, fit_id: int, ask: dict[str, Any], stop: threading.Event) -> None:
        def send(frame: dict[str, Any]) -> None:
            self.out.send({"t": "fit", "id": fit_id, **frame})

        with self.fit_lock:
            try:
                estimate(self.estimator, ask, self.slot.loaded, send, stop)
            except Exception as exc:  # a bug here must not end the host: the ask ends unanswered
                log.exception("fit estimate %s failed", fit_id)
                send({"results": {}, "done": True, "error": {"code": "internal", "message": repr(exc)[:300]}})

    def unload(self) -> None:
        if self.slot.busy:
            self.out.send({"t": "unloaded", "busy": True, "had": False, "rss": _rss()})
            return
        had = self.slot.unload()
        time.sleep(0.2)  # what the allocator gives back right after the trim
        rss = _rss()
        kind = self.device.split(":")[0] or "cpu"
        baseline = self.fresh_rss if kind == "cpu" else self.baselines.setdefault(kind, rss)
        self.out.send({"t": "unloaded", "busy": False, "had": had, "rss": rss, "baseline": baseline})

    def serve(self, sock: socket.socket) -> None:
        while True:
            try:
                message = protocol.receive(sock)
            except (protocol.Closed, OSError):
                os._exit(0)
            except protocol.ProtocolError as exc:
                log.error("ignored a command that is not ours: %s", exc)
                continue
            op = message.get("op")
            if op in ("load", "generate"):
                self.fit_stop.set()  # the user's click comes before the picker's estimates
            if op == "load" and isinstance(message.get("id"), int) and isinstance(message.get("request"), dict):
                self.load(message["id"], message["request"])
            elif op == "cancel":
                self.cancels.setdefault(int(message.get("id", 0)), threading.Event()).set()
            elif op == "generate" and isinstance(message.get("id"), int) and isinstance(message.get("request"), dict):
                self.generate(message["id"], message["request"])
            elif op == "gen_cancel":
                self.gen_cancels.setdefault(int(message.get("id", 0)), threading.Event()).set()
            elif op == "fit" and isinstance(message.get("id"), int) and isinstance(message.get("request"), dict):
                self.fit(message["id"], message["request"])
            elif op == "unload":
                self.unload()
            elif op == "exit":
                os._exit(0)
            else:
                log.error("ignored an unknown command %r", op)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C; it kills us when it must
    _die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="[model-host %(process)d] %(levelname)s %(message)s")
    sock = socket.socket(fileno=int(argv[0]))
    out = Outbox(sock)
    out.send({"t": "hello", "pid": os.getpid(), "rss": _rss()})
    host = Host(out)
    threading.Thread(target=host.imports, name="imports", daemon=True).start()
    host.serve(sock)
