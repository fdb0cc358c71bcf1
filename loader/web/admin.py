"""Read-only job history: the admin is for looking back, the dashboard for acting.

Columns use the page's words (history.py labels) so a job reads the same in both places, and
the job page shows its per-stage timings as the page's stacked chart instead of raw JSON.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from loader.jobs.history import CACHE_LABELS, SOURCE_LABELS, STAGE_LABELS, STATE_LABELS, stage_segments
from loader.jobs.models import LoadJob
from loader.jobs.selectors import job_message


class DeviceFilter(admin.SimpleListFilter):
    """The devices jobs ran on, and a named choice for those that failed before one was chosen
    (Django's own filter showed them as an empty link)."""

    title = _("장치")
    parameter_name = "device"
    NONE = "-"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        devices = LoadJob.objects.exclude(device="").values_list("device", flat=True).distinct().order_by("device")
        return [(device, device) for device in devices] + [(self.NONE, _("정해지기 전"))]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value == self.NONE:
            return queryset.filter(device="")
        return queryset.filter(device=value) if value else queryset


@admin.register(LoadJob)
class LoadJobAdmin(admin.ModelAdmin):
    list_display = (
        "id", "model_label", "started_from", "outcome", "stage_label", "device", "dtype", "total_time", "read_rate",
        "cache", "first_token", "created_at",
    )  # fmt: skip
    list_filter = ("state", "source", DeviceFilter)
    search_fields = ("model_name", "model_path")
    date_hierarchy = "created_at"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "model_label",
                    "model_path",
                    "started_from",
                    "outcome",
                    "stage_label",
                    "percent",
                    "message_view",
                )
            },  # fmt: skip
        ),
        (_("장치"), {"fields": ("device_requested", "dtype_requested", "device", "dtype")}),
        (_("오류"), {"fields": ("error_code", "error_message", "error_detail")}),
        (_("단계별 시간"), {"fields": ("stage_chart", "wall_time", "first_token", "read_rate", "cache")}),
        (_("세부 정보"), {"fields": ("metadata_view", "detail_view")}),
        (_("소유자"), {"fields": ("owner_host", "owner_pid", "requested_by", "cancel_requested")}),
        (_("시각"), {"fields": ("created_at", "started_at", "finished_at", "updated_at", "progress_at")}),
    )

    class Media:
        css = {"all": ["loader/chart.css"]}

    @admin.display(description=_("모델"), ordering="model_name")
    def model_label(self, obj: LoadJob) -> str:
        return obj.model_name

    @admin.display(description=_("시작한 곳"), ordering="source")
    def started_from(self, obj: LoadJob) -> str:
        return str(SOURCE_LABELS.get(obj.source, obj.source))

    @admin.display(description=_("결과"), ordering="state")
    def outcome(self, obj: LoadJob) -> str:
        return str(STATE_LABELS.get(obj.state, obj.state))

    @admin.display(description=_("단계"))
    def stage_label(self, obj: LoadJob) -> str:
        return str(STAGE_LABELS.get(obj.stage, obj.stage))

    @admin.display(description=_("메시지"))
    def message_view(self, obj: LoadJob) -> str:
        """Stored in the requester's language; said in the viewer's."""
        return job_message(obj, get_language() or "ko")

    @admin.display(description=_("총 시간"))
    def total_time(self, obj: LoadJob) -> str:
        """The click to the end, as the page shows it (the stage chart keeps the split)."""
        if obj.finished_at is None:
            return "—"
        return f"{(obj.finished_at - obj.created_at).total_seconds():.2f}s"

    @admin.display(description=_("총 시간(클릭부터 끝까지)"))
    def wall_time(self, obj: LoadJob) -> str:
        """The job page's total says what it counts: the chart beside it sums the stages only."""
        return self.total_time(obj)

    @admin.display(description=_("첫 토큰까지"))
    def first_token(self, obj: LoadJob) -> str:
        return f"{obj.first_token_s:.2f}s" if obj.first_token_s is not None else "—"

    @admin.display(description=_("메타데이터"))
    def metadata_view(self, obj: LoadJob) -> str:
        return _pretty(obj.metadata)

    @admin.display(description=_("진행 세부"))
    def detail_view(self, obj: LoadJob) -> str:
        return _pretty(obj.detail)

    @admin.display(description=_("읽기 속도"))
    def read_rate(self, obj: LoadJob) -> str:
        rate = (obj.detail or {}).get("bytes_per_s")
        return f"{rate / 1e6:.0f} MB/s" if isinstance(rate, int | float) and rate > 0 else "—"

    @admin.display(description=_("캐시"))
    def cache(self, obj: LoadJob) -> str:
        return str(CACHE_LABELS.get(str((obj.detail or {}).get("cache")), "—"))

    @admin.display(description=_("단계별 시간"))
    def stage_chart(self, obj: LoadJob) -> str:
        segments = stage_segments(obj.timings)
        return render_to_string(
            "loader/stage_chart.html", {"segments": segments, "total": sum(s["seconds"] for s in segments)}
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        methods = [
            "model_label",
            "started_from",
            "outcome",
            "stage_label",
            "message_view",
            "total_time",
            "wall_time",
            "read_rate",
            "cache",
            "stage_chart",
            "first_token",
            "metadata_view",
            "detail_view",
        ]
        return [f.name for f in LoadJob._meta.fields] + methods

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _pretty(value: Any) -> str:
    """JSON a person can read: indented, non-ASCII as itself, escaped as HTML."""
    text = json.dumps(value or {}, ensure_ascii=False, indent=2, sort_keys=True)
    return format_html('<pre class="json">{}</pre>', text)
