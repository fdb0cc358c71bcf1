"""Try the loaded model: start, follow, cancel one generation, and tell every viewer.

``generation_start`` refuses (409) while a load runs, while a generation runs, or without a
model in this server's host; otherwise a thread drives the generation in the host
(``loader.host.generation``) and publishes a full snapshot (``type: "generation"``) as tokens
arrive. The time to the first token is measured from the Generate click and, for the first
generation after a load, from that load's click (kept on the job: history and admin show it).
A generation the host cannot stop costs the host and its model, which is then recorded as lost.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from loader.host.generation import NoModel, run_generation
from loader.host.supervisor import HostBusy
from loader.jobs import gen_state
from loader.jobs.i18n import both
from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob
from loader.jobs.publisher import publisher
from loader.jobs.selectors import job_active, loader_state
from loader.jobs.servers import process_record_lost
from loader.pipeline.i18n import Msg, gettext_noop

log = logging.getLogger("loader.generations")
_cancel = threading.Event()
_ids = iter(range(int(time.time() * 1000) % 1_000_000_000, 1 << 62))


class GenerationRefused(Exception):
    def __init__(self, message: Msg) -> None:
        super().__init__(str(message))
        self.message = message


def generation_start(*, prompt: str, max_new_tokens: int, chat: bool) -> dict[str, Any]:
    """Begin a generation with the loaded model; returns its first snapshot."""
    if job_active() is not None or MODEL_HOST.busy and not _running():
        raise GenerationRefused(
            gettext_noop("모델을 로드하는 중에는 생성할 수 없습니다. 로드가 끝난 뒤 다시 시도하세요.")
        )
    if _running():
        raise GenerationRefused(gettext_noop("생성이 이미 진행 중입니다. 끝나거나 중지한 뒤 다시 시도하세요."))
    model = MODEL_HOST.model
    if not MODEL_HOST.holds(model) or model is None:
        raise GenerationRefused(gettext_noop("로드된 모델이 없습니다. 먼저 모델을 로드하세요."))
    snapshot = {
        "id": next(_ids), "state": "running", "model": str(model.get("name", "")), "prompt": prompt,
        "max_new_tokens": max_new_tokens, "chat": chat, "text": "", "tokens": 0, "tokens_per_s": None,
        "first_token_s": None, "after_load_s": None, "requested_at": time.time(), "error": None,
    }  # fmt: skip
    if not gen_state.begin(snapshot):
        raise GenerationRefused(gettext_noop("생성이 이미 진행 중입니다. 끝나거나 중지한 뒤 다시 시도하세요."))
    _cancel.clear()
    threading.Thread(target=_drive, args=(snapshot,), name=f"generation-{snapshot['id']}", daemon=True).start()
    _publish(snapshot)
    return snapshot


def generation_cancel(*, wait_s: float = 0.0) -> dict[str, Any] | None:
    """Ask the running generation to stop; with ``wait_s``, wait that long for it to end."""
    current = gen_state.current()
    if current is None or current.get("state") != "running":
        return None
    _cancel.set()
    if wait_s > 0:
        gen_state.wait_ended(wait_s)
    return gen_state.current()


def _running() -> bool:
    current = gen_state.current()
    return current is not None and current.get("state") == "running"


def _drive(snapshot: dict[str, Any]) -> None:
    gen_id, requested_at = snapshot["id"], snapshot["requested_at"]
    job = _loading_job(snapshot["model"])
    spec = {"prompt": snapshot["prompt"], "max_new_tokens": snapshot["max_new_tokens"], "chat": snapshot["chat"]}

    def timing(message: dict[str, Any]) -> dict[str, Any]:
        first = message.get("first_token_at")
        fields: dict[str, Any] = {k: message.get(k) for k in ("text", "tokens", "tokens_per_s") if k in message}
        if isinstance(first, int | float):
            fields["first_token_s"] = round(first - requested_at, 4)
            if job is not None:
                fields["after_load_s"] = round(first - job.created_at.timestamp(), 4)
        return fields

    def on_update(message: dict[str, Any]) -> None:
        if (current := gen_state.update(gen_id, **timing(message))) is not None:
            _publish(current, force=False)

    killed = ""
    try:
        outcome = run_generation(
            MODEL_HOST, gen_id, spec, on_update=on_update, should_cancel=_cancel.is_set,
            grace_s=settings.MACTUNER_CANCEL_GRACE_S,
        )  # fmt: skip
        killed = outcome.killed
        fields = timing(outcome.result) | {"state": outcome.state, "error": _error(outcome.error, killed)}
    except (HostBusy, NoModel):
        fields = {"state": "failed", "error": _error({"code": "busy"}, "")}
    except Exception:
        log.exception("generation %s failed", gen_id)
        fields = {"state": "failed", "error": _error({"code": "internal"}, "")}
    final = gen_state.update(gen_id, **fields)
    try:
        if job is not None and final and final.get("after_load_s") is not None:
            LoadJob.objects.filter(pk=job.pk, first_token_s__isnull=True).update(first_token_s=final["after_load_s"])
        if killed:  # the host was killed (stuck) or died: its model went with it
            why = "generation_killed:SIGKILL" if killed == "cancel" else f"host_died:{killed}"
            process_record_lost(model={"name": snapshot["model"]}, why=why)
    except Exception:
        log.exception("generation %s: could not record its end", gen_id)
    finally:
        if final is not None:
            _publish(final)
        connection.close()


def _loading_job(name: str) -> LoadJob | None:
    """The load that brought the current model in (this server's newest success for that name)."""
    try:
        return (
            LoadJob.objects.filter(state=LoadJob.State.SUCCEEDED, model_name=name, finished_at__lte=timezone.now())
            .order_by("-finished_at")
            .first()
        )
    except Exception:
        return None


ERRORS = {
    "busy": gettext_noop("모델 호스트가 다른 작업 중이라 생성하지 못했습니다."),
    "host_killed": gettext_noop(
        "생성이 멈추지 않아 모델 호스트를 다시 시작했습니다. 모델이 언로드되었으니 다시 로드하세요."
    ),
    "host_died": gettext_noop(
        "생성 중에 모델 호스트가 종료되었습니다({signal}). 모델이 언로드되었으니 다시 로드하세요."
    ),
    "generation_failed": gettext_noop("생성에 실패했습니다: {reason}"),
    "internal": gettext_noop("생성 중 예기치 않은 오류가 발생했습니다."),
}


def _error(error: dict[str, Any] | None, killed: str) -> dict[str, Any] | None:
    if killed == "cancel":
        error = {"code": "host_killed"}
    if not error:
        return None
    code = str(error.get("code") or "internal")
    params = {"signal": str(error.get("signal") or "?"), "reason": str(error.get("reason") or "?")[:300]}
    return {"code": code, "text": both(ERRORS.get(code, ERRORS["internal"]), params), "detail": error.get("detail", "")}


def _publish(generation: dict[str, Any], force: bool = True) -> None:
    """A full snapshot (the load state too) with the generation's fields on top, as the contract says."""
    try:
        state = loader_state()
    except Exception:
        return
    flat = {k: generation.get(k) for k in ("id", "state", "text", "tokens", "tokens_per_s", "first_token_s")}
    publisher.send(state | {"type": "generation"} | flat | {"generation": generation}, force=force)
