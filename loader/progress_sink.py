"""Where a running job's progress is written and published, off the load thread.

The load thread only hands each due event over (a queue put); this thread writes the row and
builds and publishes the snapshot, so the weights never wait on the database or the channel
layer. A newer progress event supersedes an unsent one; stage changes are never dropped: each
gets its snapshot at once, while the row (which keeps only the newest) is written at most once
per ``LINGER_S`` — every row write is a GIL hand-off that a fast load pays for. ``drain()``
returns once everything handed over is published and written, so the outcome comes after it.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from . import processes, services
from .events import publisher
from .models import LoadJob, ServerProcess
from .pipeline import ProgressEvent
from .pipeline.events import Stage
from .process import IDENTITY, SLOT
from .selectors import loader_state_safe, processes_holding

log = logging.getLogger("loader.progress")
HOLDERS_TTL_S = 1.0
LINGER_S = 0.02


class ProgressSink:
    def __init__(self, job: LoadJob) -> None:
        self.job = job
        self._pending: list[tuple[ProgressEvent, bool]] = []
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._flush = False  # drain(): write what lingers now
        self._superseded = False  # drain(superseded=True): the outcome's write replaces ours
        self._stale = False
        self._unwritten: ProgressEvent | None = None  # published, its row write lingering
        self._written_at = time.monotonic()  # job_start has just written the row
        # Whether the slot held a model as this load began: only then can the load drop one, and
        # our server row need saying so (an empty slot's row is empty already).
        self.recorded_unload = SLOT.loaded is None
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
        """Wait until what was handed over is published and written; past ``timeout`` the rest is
        dropped, never written late.

        ``superseded``: the outcome about to be written carries the newest event (a success: stage
        "done", every stage's timing), so no more rows are written: what is queued is only
        published (viewers still see every stage change), what lingers is dropped.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            if superseded:
                self._superseded = True
                self._unwritten = None
            self._flush = True
            self._cond.notify_all()
            while (self._pending or self._busy or self._unwritten is not None) and self._thread.is_alive():
                if not self._cond.wait(max(deadline - time.monotonic(), 0)):
                    self._pending.clear()
                    self._unwritten = None
                    self._stale = True  # a write still in flight must not publish after the outcome
                    break
            self._flush = False

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
                    while not (self._pending or self._closed or self._write_due()):
                        self._cond.wait(None if self._unwritten is None else LINGER_S)
                    if self._closed and not self._pending and self._unwritten is None:
                        return
                    batch, self._pending = self._pending, []
                    self._busy = True
                try:
                    self._handle(batch)
                except Exception:  # a bug here must not stop the load or hang drain()
                    log.exception("job %s: progress not published", self.job.pk)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            connection.close()

    def _write_due(self) -> bool:
        if self._unwritten is None or self._superseded:
            return False
        return self._flush or time.monotonic() - self._written_at >= LINGER_S

    def _handle(self, batch: list[tuple[ProgressEvent, bool]]) -> None:
        """Publish a snapshot for each stage change in ``batch`` and for its newest event; write the
        row (it keeps only the newest) at most once per ``LINGER_S``: the stage changes of a fast
        load (tokenizer, config, weights within a few ms) are one write, not three."""
        if self._stale:
            return
        if batch and not self._superseded:
            self._unwritten = batch[-1][0]
        if self._write_due():
            self._record(self._unwritten)  # type: ignore[arg-type]
        if not batch:
            return
        holders = self._holders()
        for i, (event, stage_changed) in enumerate(batch):
            if self._stale or not (stage_changed or i == len(batch) - 1):
                continue
            if self._superseded and event.stage is Stage.DONE:
                continue  # the outcome's own snapshot, a moment later, says "done" and more
            mirror(self.job, event)  # the snapshot shows this event (the row may lag by LINGER_S)
            queued = self.job.state == LoadJob.State.QUEUED
            if queued:  # running from its first event on; the first row write keeps this time
                self.job.started_at = self.job.started_at or timezone.now()
            state = loader_state_safe(self.job, holders)
            if queued and state["job"]:  # our copy stays "queued" until the row says "running"
                state["job"]["state"] = LoadJob.State.RUNNING  # (that write tries queued first)
            publisher.send(state, force=stage_changed)

    def _record(self, newest: ProgressEvent) -> None:
        """Write the newest event to the row (and, once, our slot's unload of the previous model)."""
        job = self.job
        self._unwritten, self._written_at = None, time.monotonic()
        try:
            if not self.recorded_unload and SLOT.loaded is None and IDENTITY.serving:
                processes.process_record_unloaded()  # the slot dropped the previous model: say so
                self.recorded_unload = True
                self._held = None  # the next snapshot reads the servers' models afresh
            services.job_progress(job=job, event=newest.to_dict())
            self.storage_error = ""
        except DatabaseError as exc:  # disk full, DB gone: the load goes on, viewers still hear it
            if not self.storage_error:
                log.error("job %s: progress not saved: %r", job.pk, exc)
            self.storage_error = repr(exc)
            close_old_connections()  # a dropped connection is replaced on the next write
            mirror(job, newest)

    def _holders(self) -> list[ServerProcess] | None:
        """The servers' models for the snapshots, read at most once a second (they change when our
        slot unloads, which drops this cache, or when another server loads): a write saves a query."""
        now = time.monotonic()
        if self._held is None or now - self._held[0] > HOLDERS_TTL_S:
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
