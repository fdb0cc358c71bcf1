"""``GET /api/fit?device=&dtype=``: whether each listed model fits the chosen device, before a click.

Async, and its blocking part (the model list, a wait of at most ``jobs.fits.FIT_WAIT_S`` for the
model host) runs in a pool of its own: a picker refreshing while a load runs never holds the
status and job reads. The device and dtype are checked as ``POST /api/load`` checks them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from loader.jobs.fits import fit_hints
from loader.pipeline.i18n import gettext_noop
from loader.web.access import staff_required
from loader.web.offloop import off_loop
from loader.web.views import _error, options_refusal, query_lists

FIT_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="loader-fit")


@require_GET
@staff_required(api=True)
async def fit(request: HttpRequest) -> JsonResponse:
    query = query_lists(request, ("device", "dtype"))
    if isinstance(query, JsonResponse):
        return query
    if any(len(values) > 1 for values in query.values()):
        return _error(400, gettext_noop("'device'와 'dtype'은 한 번씩만 지정하세요."))
    device, dtype = (values[0] if values else "auto" for values in query.values())
    if (refused := options_refusal(device, dtype)) is not None:
        return refused
    return JsonResponse(await off_loop(lambda: fit_hints(device=device, dtype=dtype), pool=FIT_POOL))
