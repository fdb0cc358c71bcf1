"""LoadJob: one row per load attempt, kept as history.

"At most one active job" is a partial unique index, so it holds across threads, server
processes and the CLI: the second racing INSERT fails in the database, not in Python.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy


class LoadJob(models.Model):
    # The labels are the page's own words (the same msgids as templates/loader/page.html): the
    # admin's filters and columns and the page's history say a state alike in either language.
    class State(models.TextChoices):
        QUEUED = "queued", _("대기 중")
        RUNNING = "running", _("진행 중")
        SUCCEEDED = "succeeded", _("성공")
        FAILED = "failed", _("실패")
        CANCELLED = "cancelled", _("취소됨")
        INTERRUPTED = "interrupted", _("중단됨")

    class Source(models.TextChoices):
        WEB = "web", _("웹")
        CLI = "cli", _("CLI")

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)
    FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED, State.INTERRUPTED)

    model_name = models.CharField(max_length=300)
    model_path = models.CharField(max_length=1000)
    device_requested = models.CharField(max_length=16, default="auto")
    dtype_requested = models.CharField(max_length=16, default="auto")
    device = models.CharField(_("장치"), max_length=16, blank=True)
    dtype = models.CharField(max_length=16, blank=True)
    source = models.CharField(_("시작한 곳"), max_length=8, choices=Source.choices, default=Source.WEB)
    # The slot the job loads into; one active job per slot (one model per server).
    slot = models.CharField(max_length=32, default="default")
    state = models.CharField(_("결과"), max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    stage = models.CharField(max_length=16, default="preparing")
    percent = models.FloatField(default=0.0)
    message = models.CharField(max_length=500, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    error_detail = models.TextField(blank=True)
    # The error's Korean template and parameters, so every viewer reads it in its own language.
    error_params = models.JSONField(default=dict, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    owner_host = models.CharField(max_length=255, blank=True)
    owner_pid = models.IntegerField(null=True, blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    # The requester's UI language: the pipeline words its stage messages in it.
    lang = models.CharField(max_length=8, default="ko")
    # For a PEFT adapter: merge it into its base (``merge_and_unload``) rather than keep it separate.
    merge = models.BooleanField(default=False)
    # The load's click to the first token of the first generation after it: what "ready" cost the user.
    first_token_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # The admin speaks the users' language: "로드 작업", not "load job" run through Korean grammar.
        verbose_name = _("로드 작업")
        # Korean says the plural with the same words; English needs its own ("load jobs").
        verbose_name_plural = pgettext_lazy("plural", "로드 작업")
        constraints = [
            models.UniqueConstraint(
                fields=["slot"],
                condition=Q(state__in=["queued", "running"]),
                name="loader_one_active_job_per_slot",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.model_name} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def total_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return round((self.finished_at - self.started_at).total_seconds(), 2)
        return None


class ServerProcess(models.Model):
    """What one server process holds, readable by every other process (one row per process).

    A model lives in the memory of the process that loaded it; this row is how the others know
    (``/api/status`` on any server), and ``channel`` is where they reach it (unload, cancel).
    A row whose heartbeat stops is treated as gone and removed.
    """

    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    channel = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField()
    model_name = models.CharField(max_length=300, blank=True)
    model_path = models.CharField(max_length=1000, blank=True)
    device = models.CharField(max_length=16, blank=True)
    dtype = models.CharField(max_length=16, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    loaded_at = models.DateTimeField(null=True, blank=True)
    # The model-host process that holds the model for this server (its memory is there).
    host_pid = models.IntegerField(null=True, blank=True)
    # The model this server lost when its host died outside a load: {name, code, signal, at}.
    lost = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "pid"], name="loader_one_row_per_process")]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} ({self.model_name or 'empty'})"
