"""Where a running job's progress is written and published, off the load thread.

The load thread only hands each due event over (a queue put); this thread writes the row and
builds and publishes the snapshot, so the weights never wait on the database or the channel
layer. A newer progress event supersedes an unsent one; stage changes are never dropped: what
piled up during a write becomes one row write (the newest) and a snapshot per stage change.
``drain()`` returns once everything handed over is written, so the outcome comes after it.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import DatabaseError, close_old_connections, connection

from . import processes, services
from .events import publisher
from .models import LoadJob, ServerProcess
from .pipeline import ProgressEvent
from .process import IDENTITY, SLOT
from .selectors import loader_state_safe, processes_holding

log = logging.getLogger("loader.progress")
HOLDERS_TTL_S = 1.0


class ProgressSink:
    def __init__(self, job: LoadJob) -> None:
        self.job = job
        self._pending: list[tuple[ProgressEvent, bool]] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._stale = False
        self.recorded_unload = False
        self.storage_error = ""
        self._held: tuple[float, list[ServerProcess]] | None = None
        self._thread = threading.Thread(target=self._run, name=f"load-progress-{job.pk}", daemon=True)
        self._thread.start()

    def offer(self, event: ProgressEvent, stage_changed: bool) -> None:
        with self._cond:
            if self._pending and not self._pending[-1][1]:
                self._pending[-1] = (event, stage_changed)  # an unsent progress event is superseded
            else:
                self._pending.append((event, stage_changed))
            self._cond.notify_all()

    def drain(self, timeout: float = 30.0, superseded: bool = False) -> None:
        """Wait for what was handed over; past ``timeout`` the rest is dropped, never written late.

        ``superseded``: the outcome about to be written carries the newest event (a success: stage
        "done", every stage's timing), so what is still queued is dropped, not written and published
        just before it; only a write already under way is waited for.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if superseded:
                self._pending.clear()
            while (self._pending or self._busy) and self._thread.is_alive():
                if not self._cond.wait(max(deadline - time.monotonic(), 0)):
                    self._pending.clear()
                    self._stale = True  # a write still in flight must not publish after the outcome
                    break

    def close(self) -> None:
        self.drain()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closed:
                        self._cond.wait()
                    if not self._pending:
                        return
                    batch, self._pending = self._pending, []
                    self._busy = True
                try:
                    self._write(batch)
                except Exception:  # a bug here must not stop the load or hang drain()
                    log.exception("job %s: progress not published", self.job.pk)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            connection.close()

    def _write(self, batch: list[tuple[ProgressEvent, bool]]) -> None:
        """One row write for everything that piled up (the row keeps only the newest anyway), then
        a snapshot for each stage change in it and for the newest, from one read of the servers."""
        if self._stale:
            return
        job, newest, unloaded = self.job, batch[-1][0], False
        try:
            if not self.recorded_unload and SLOT.loaded is None and IDENTITY.serving:
                processes.process_record_unloaded()  # the slot dropped the previous model: say so
                self.recorded_unload = unloaded = True
            services.job_progress(job=job, event=newest.to_dict())
            self.storage_error = ""
        except DatabaseError as exc:  # disk full, DB gone: the load goes on, viewers still hear it
            if not self.storage_error:
                log.error("job %s: progress not saved: %r", job.pk, exc)
            self.storage_error = repr(exc)
            close_old_connections()  # a dropped connection is replaced on the next write
            mirror(job, newest)
        holders = self._holders(fresh=unloaded)
        for i, (event, stage_changed) in enumerate(batch):
            last = i == len(batch) - 1
            if self._stale or not (stage_changed or last):
                continue
            if not last:
                mirror(job, event)  # the row already holds the newest; the snapshot shows this one
            elif len(batch) > 1:
                mirror(job, newest)
            publisher.send(loader_state_safe(job, holders), force=stage_changed)

    def _holders(self, fresh: bool) -> list[ServerProcess] | None:
        """The servers' models for the snapshots, read at most once a second (they change when our
        slot unloads, which ``fresh`` says, or when another server loads): a write saves a query."""
        now = time.monotonic()
        if fresh or self._held is None or now - self._held[0] > HOLDERS_TTL_S:
            try:
                self._held = (now, processes_holding())
            except DatabaseError:
                return None
        return self._held[1]


def mirror(job: LoadJob, event: ProgressEvent) -> None:
    """Keep the in-memory row current when it cannot be written, so viewers still see progress."""
    data = event.to_dict()
    job.stage, job.percent, job.message = data["stage"], data["percent"], data["message"]
    job.detail, job.timings = data["detail"], data["timings"]
