"""Read-only job history: the admin is for looking back, the dashboard for acting."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import LoadJob


@admin.register(LoadJob)
class LoadJobAdmin(admin.ModelAdmin):
    list_display = ("id", "model_name", "source", "state", "device", "dtype", "total_time", "created_at")
    list_filter = ("state", "source", "device")
    search_fields = ("model_name", "model_path")
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("model_name", "model_path", "source", "state", "stage", "percent", "message")}),
        ("Device", {"fields": ("device_requested", "dtype_requested", "device", "dtype")}),
        ("Error", {"fields": ("error_code", "error_message", "error_detail")}),
        ("Details", {"fields": ("timings", "metadata", "detail")}),
        ("Owner", {"fields": ("owner_host", "owner_pid", "requested_by", "cancel_requested")}),
        ("Times", {"fields": ("created_at", "started_at", "finished_at", "updated_at", "progress_at")}),
    )

    @admin.display(description="total (s)")
    def total_time(self, obj: LoadJob) -> float | None:
        return obj.total_seconds

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in LoadJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
