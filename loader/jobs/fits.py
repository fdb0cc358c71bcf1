"""The picker's fit hints: each listed model's memory need against the chosen device's room.

The needs come from the model host (``host.fits``: the load's own preflight, kept there per
files); this module only names the models and their folders, and says each answer in words: a
verdict of ``pipeline.fit`` (the rule the load's refusal uses), or ``unknown`` with why (the
model's list problem, the host busy with a load or a generation, not started, still working).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from loader.catalog import cache as catalog_cache
from loader.host.fits import BUSY, READY, STARTING, STOPPED, FitView
from loader.jobs.i18n import here
from loader.jobs.local import MODEL_HOST
from loader.jobs.runner import adapter_bases
from loader.pipeline import fit
from loader.pipeline.i18n import Msg, gettext_noop
from loader.pipeline.inspect.formats import ADAPTER

FIT_WAIT_S = 1.0  # what a request waits for the host at most; a longer first pass answers "pending"

_WAITING = {
    BUSY: gettext_noop("모델을 로드하거나 생성하는 중이라 아직 계산하지 않았습니다. 끝나면 계산합니다."),
    STOPPED: gettext_noop("모델 호스트가 아직 시작되지 않았습니다. 첫 로드 때 시작되고 그 뒤에 계산합니다."),
}
_PENDING = gettext_noop("메모리를 계산하는 중입니다.")


def _said(error: dict[str, Any]) -> str:
    """A host error ({template, params} or a bare message) in this request's language."""
    if isinstance(error.get("template"), str):
        return here(Msg(error["template"], error.get("params") or {}))
    return str(error.get("message") or error.get("code") or "?")


def _hint(entry: dict[str, Any], view: FitView, pending: bool) -> dict[str, Any]:
    known = view.known
    hint: dict[str, Any] = {"name": entry["name"], "need_bytes": None, "available_bytes": known.available}
    result = known.results.get(entry["name"]) or {}
    if entry.get("problem"):
        return hint | {"fit": fit.UNKNOWN, "why": here(entry["problem"])}
    if known.error is not None:
        return hint | {"fit": fit.UNKNOWN, "why": _said(known.error)}
    if "error" in result:
        return hint | {"fit": fit.UNKNOWN, "why": _said(result["error"])}
    if "need" in result and known.available is not None and known.target is not None:
        verdict, why = fit.verdict(int(result["need"]), known.available, known.target)
        return hint | {"need_bytes": int(result["need"]), "fit": verdict} | ({"why": here(why)} if why else {})
    waiting = _PENDING if pending else _WAITING.get(view.host, _PENDING)
    return hint | {"fit": fit.UNKNOWN, "why": here(waiting)}


def fit_hints(*, device: str, dtype: str, wait_s: float = FIT_WAIT_S) -> dict[str, Any]:
    """``GET /api/fit``'s answer for options already checked; waits at most ``wait_s`` for the host."""
    described, catalog = catalog_cache.cache.listed()  # the list as shown, not listed again (10,000 folders: s)
    entries = {e.name: e for e in catalog}
    models = [
        {
            "name": m["name"], "path": str(entries[m["name"]].path),
            "bases": adapter_bases(entries[m["name"]].path, anywhere=False, catalog=catalog)
            if m.get("format") == ADAPTER else {},
        }
        for m in described
        if not m.get("problem") and m["name"] in entries
    ]  # fmt: skip
    view = MODEL_HOST.fits.ask(
        MODEL_HOST, models, device, dtype, allow_remote_code=settings.MACTUNER_TRUST_REMOTE_CODE, wait_s=wait_s
    )
    known = view.known
    # A model listed after the host's last ask began (a new folder) is asked about on the next request.
    missing = any(m["name"] not in known.results for m in models)
    pending = view.pending or (missing and view.host in (READY, STARTING) and known.error is None)
    return {
        "device": device, "dtype": dtype, "target": known.target, "available_bytes": known.available,
        "freed_bytes": known.freed, "as_of": datetime.fromtimestamp(known.at, UTC).isoformat() if known.at else None,
        "host": view.host, "pending": pending, "tight_share": fit.TIGHT_SHARE,
        "models": [_hint(m, view, pending) for m in described],
    }  # fmt: skip
