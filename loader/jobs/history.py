"""Looking back at loads: the ETA a model's earlier loads predict, and the names every view shows.

The labels are the page's own words (the same msgids as templates/loader/page.html), so the
admin and the dashboard cannot drift apart in either language.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from django.utils.translation import gettext_lazy as _

from loader.jobs.models import LoadJob

HISTORY_SAMPLES = 5
EXPECTED_TTL_S = 1.0
_EXPECTED: dict[str, tuple[float, float | None]] = {}  # model name -> (when read, median total)
CHART_STAGES = ("preparing", "tokenizer", "config", "weights", "device", "metadata")

STAGE_LABELS = {
    "preparing": _("준비"),
    "tokenizer": _("토크나이저"),
    "config": _("모델 구성"),
    "weights": _("가중치"),
    "device": _("장치 이동"),
    "metadata": _("메타데이터"),
    "done": _("완료"),
}
STATE_LABELS = dict(LoadJob.State.choices)
SOURCE_LABELS = dict(LoadJob.Source.choices)
CACHE_LABELS = {"hot": _("핫"), "cold": _("콜드"), "mixed": _("혼합")}


def expected_total_seconds(model_name: str) -> float | None:
    """Median total of this model's last succeeded loads: the ETA before any byte is read.

    Every snapshot of an active job carries it (ten a second while loading): a second-old answer
    is as good an ETA, and the load thread's process is spared a query per snapshot.
    """
    now = time.monotonic()
    cached = _EXPECTED.get(model_name)
    if cached is not None and now - cached[0] < EXPECTED_TTL_S:
        return cached[1]
    value = _expected_total_seconds(model_name)
    if len(_EXPECTED) > 256:
        _EXPECTED.clear()
    _EXPECTED[model_name] = (now, value)
    return value


def forget_expected(model_name: str) -> None:
    """A load of this model ended here: the next ETA is read afresh."""
    _EXPECTED.pop(model_name, None)


def _expected_total_seconds(model_name: str) -> float | None:
    rows = (
        LoadJob.objects.filter(model_name=model_name, state=LoadJob.State.SUCCEEDED)
        .order_by("-id")
        .values_list("timings", flat=True)[:HISTORY_SAMPLES]
    )
    totals = [float(t["total"]) for t in rows if isinstance(t, dict) and isinstance(t.get("total"), int | float)]
    return round(statistics.median(totals), 3) if totals else None


def stage_segments(timings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The stacked bar's segments: each finished stage's share of the summed stage times."""
    timings = timings or {}
    pairs = [(s, float(timings[s])) for s in CHART_STAGES if isinstance(timings.get(s), int | float)]
    whole = sum(seconds for _stage, seconds in pairs)
    if whole <= 0:
        return []
    return [
        {"stage": s, "label": STAGE_LABELS[s], "seconds": seconds, "percent": round(100 * seconds / whole, 2)}
        for s, seconds in pairs
    ]
