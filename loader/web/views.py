"""The page and the JSON API: validate, call a service, answer. No business logic here.

The reads (page, models, status, jobs) are async views whose database and file work runs in
``offloop``'s pools: they answer while a slow sync view or a crowd of sockets keeps Django's one
sync thread busy. The actions (load, cancel, unload) stay sync.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from loader.catalog import cache as catalog_cache
from loader.catalog.listing import find_model
from loader.jobs import runner, servers, services
from loader.jobs.i18n import here
from loader.jobs.selectors import job_active, job_page, job_snapshot, loader_state
from loader.pipeline.device import DEVICES, DTYPES
from loader.pipeline.errors import LoaderBusy
from loader.pipeline.i18n import Msg, gettext_noop
from loader.web.access import staff_required
from loader.web.devices import device_options, device_refusal
from loader.web.offloop import CATALOG_POOL, off_loop

JOBS_DEFAULT, JOBS_MAX = 10, 100


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    """The refusal in the request's language (``message`` is a Korean template, see ``loader.jobs.i18n``)."""
    return JsonResponse({"error": here(message), **extra}, status=status)


def _json_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        raw = request.body
    except RequestDataTooBig:
        return _error(413, gettext_noop("요청 본문이 너무 큽니다."))
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # nesting deep enough to exhaust the stack too
        return _error(400, gettext_noop("요청 본문이 올바른 JSON이 아닙니다."))
    if not isinstance(data, dict):
        return _error(400, gettext_noop("요청 본문은 JSON 객체여야 합니다."))
    return data


@require_GET
@ensure_csrf_cookie
@staff_required(api=False)
async def page(request: HttpRequest) -> Any:
    def build() -> Any:
        return render(
            request,
            "loader/page.html",
            {
                "initial_state": loader_state(),
                # What this machine lacks is shown, disabled, with why (not offered to fail after the click).
                "devices": [{"value": o.value, "reason": here(o.reason) if o.reason else ""} for o in device_options()],
                "dtypes": DTYPES,
                "stall_seconds": settings.MACTUNER_STALL_SECONDS,
            },
        )

    return await off_loop(build)


@require_GET
@staff_required(api=True)
async def models(request: HttpRequest) -> JsonResponse:
    described = await off_loop(catalog_cache.cache.described, pool=CATALOG_POOL)
    # A problem is a message template: say it in this request's language.
    return JsonResponse(
        {"models": [m | {"problem": here(m["problem"]) if m.get("problem") else None} for m in described]}
    )


@require_GET
@staff_required(api=True)
async def status(request: HttpRequest) -> JsonResponse:
    state = await off_loop(loader_state)
    fields = ("job", "loaded", "held", "lost", "generation", "catalog")
    return JsonResponse({key: state[key] for key in fields})


def query_lists(request: HttpRequest, names: tuple[str, ...]) -> dict[str, list[str]] | JsonResponse:
    """Each of ``names``' values in the query, or the 400 for a query of more parameters than
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` (Django raises on reading it; its debug page reads it again)."""
    try:
        return {name: request.GET.getlist(name) for name in names}
    except TooManyFieldsSent:
        return _error(
            400,
            gettext_noop("쿼리 매개변수가 너무 많습니다(최대 {most}개).", most=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS),
        )


def _query_int(request: HttpRequest, name: str, default: int | None, digits: int) -> tuple[int | None, str]:
    """``name`` from the query as a positive integer (None when absent), and the raw text it came
    from. Plain ASCII digits, given once: int() would also take " 5", "1_0", "+7" or "٣", and a
    repeated parameter is ambiguous. An unusable value comes back as 0."""
    values = request.GET.getlist(name)
    if not values:
        return default, ""
    raw = values[-1]
    ok = len(values) == 1 and re.fullmatch(f"[0-9]{{1,{digits}}}", raw) is not None
    return (int(raw) if ok else 0), raw


@require_GET
@staff_required(api=True)
async def jobs(request: HttpRequest) -> JsonResponse:
    """A page of the job history, newest first: ``?limit=N`` rows, ``&before=ID`` older than job ID."""
    if isinstance(refused := query_lists(request, ("limit", "before")), JsonResponse):
        return refused
    limit, raw = _query_int(request, "limit", JOBS_DEFAULT, 3)
    if limit is None or not 1 <= limit <= JOBS_MAX:
        return _error(
            400,
            gettext_noop("'limit'은 1에서 {most} 사이의 정수여야 합니다: {value}", most=JOBS_MAX, value=repr(raw[:20])),
        )
    before, raw = _query_int(request, "before", None, 18)
    if before == 0:
        return _error(400, gettext_noop("'before'는 작업 번호(양의 정수)여야 합니다: {value}", value=repr(raw[:20])))
    page, more = await off_loop(lambda: job_page(limit=limit, before=before))
    return JsonResponse({"jobs": page, "more": more})


def options_refusal(device: Any, dtype: Any) -> JsonResponse | None:
    """The 400 for a device or dtype a load (or a fit hint) cannot take; None when both are usable."""
    if not isinstance(device, str) or device not in DEVICES:
        return _error(
            400,
            gettext_noop(
                "알 수 없는 장치입니다: {value} (가능: {choices})", value=repr(device)[:40], choices=", ".join(DEVICES)
            ),
        )
    if (missing := device_refusal(device)) is not None:  # refused now, before a job starts
        return _error(
            400, gettext_noop("장치 {device}을(를) 쓸 수 없습니다: {reason}", device=device, reason=here(missing))
        )
    if not isinstance(dtype, str) or dtype not in DTYPES:
        return _error(
            400,
            gettext_noop(
                "알 수 없는 dtype입니다: {value} (가능: {choices})", value=repr(dtype)[:40], choices=", ".join(DTYPES)
            ),
        )
    return None


@require_POST
@staff_required(api=True)
def load(request: HttpRequest) -> JsonResponse:
    data = _json_body(request)
    if isinstance(data, JsonResponse):
        return data
    name, device, dtype = data.get("model"), data.get("device", "auto"), data.get("dtype", "auto")
    if not isinstance(name, str) or not name.strip():
        return _error(400, gettext_noop("'model'에 모델 이름(문자열)을 지정하세요."))
    if (refused := options_refusal(device, dtype)) is not None:
        return refused
    merge = data.get("merge", False)
    if not isinstance(merge, bool):
        return _error(400, gettext_noop("'merge'는 true 또는 false여야 합니다: {value}", value=repr(merge)[:40]))
    entry = find_model(name)
    if entry is None:
        return _error(400, gettext_noop("모델 목록에 없는 이름입니다: {name}", name=repr(name[:200])))
    try:
        job = services.job_start(
            model_name=entry.name, model_path=str(entry.path), device=device, dtype=dtype, source="web", merge=merge,
            requested_by=request.user.get_username() if request.user.is_authenticated else "",
            lang=getattr(request, "LANGUAGE_CODE", "ko"), then=runner.start_job_thread,
        )  # fmt: skip
    except services.JobBusy as busy:
        return _error(409, busy.message, job=job_snapshot(busy.active))
    return JsonResponse({"job": job_snapshot(job)}, status=202)


@require_POST
@staff_required(api=True)
def cancel(request: HttpRequest) -> JsonResponse:
    job = job_active()
    if job is None or not services.job_cancel(job=job):
        return _error(409, gettext_noop("진행 중인 로드가 없습니다."))
    return JsonResponse({"job": job_snapshot(job)}, status=202)


@require_POST
@staff_required(api=True)
def unload(request: HttpRequest) -> JsonResponse:
    try:
        had = servers.model_unload()
    except LoaderBusy as exc:
        return _error(409, Msg(exc.template, exc.params))
    except servers.OwnerUnreachable as exc:
        return _error(503, gettext_noop("모델을 가진 서버가 응답하지 않습니다: {owner}", owner=str(exc)))
    return JsonResponse({"unloaded": had, "loaded": None})


def csrf_failure(request: HttpRequest, reason: str = "") -> Any:
    """API clients get the refusal as JSON in plain words, not Django's HTML help page."""
    if request.path.startswith("/api/"):
        return _error(
            403,
            gettext_noop(
                "CSRF 토큰이 없거나 맞지 않습니다. 페이지(/)에서 받은 csrftoken 쿠키 값을 X-CSRFToken 헤더로 보내세요."
            ),
            reason=reason,
        )
    from django.views.csrf import csrf_failure as default_failure

    return default_failure(request, reason=reason)
