"""``POST /api/generate`` and ``POST /api/generate/cancel``: try the loaded model from the API.

Async views: ``"wait": true`` holds the request until the generation ends, and that wait must
not hold Django's one sync thread (every other sync view would queue behind it). Checks and
state changes run off the loop (``generations`` reads the database).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from loader.jobs import gen_state, generations
from loader.pipeline.generate import MAX_NEW_TOKENS, MAX_PROMPT_CHARS
from loader.pipeline.i18n import gettext_noop
from loader.web.access import staff_required
from loader.web.offloop import off_loop
from loader.web.views import _error, _json_body

WAIT_LIMIT_S = 600.0
RESULT_FIELDS = ("id", "state", "text", "tokens", "tokens_per_s", "first_token_s", "after_load_s", "error")


def _options(data: dict[str, Any]) -> tuple[str, int, bool, bool] | JsonResponse:
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
        return _error(400, gettext_noop("'prompt'는 1~{max}자의 문자열이어야 합니다.", max=MAX_PROMPT_CHARS))
    tokens = data.get("max_new_tokens", 32)
    if type(tokens) is not int or not 1 <= tokens <= MAX_NEW_TOKENS:
        return _error(
            400,
            gettext_noop(
                "'max_new_tokens'는 1~{max} 사이의 정수여야 합니다: {value}",
                max=MAX_NEW_TOKENS,
                value=repr(tokens)[:40],
            ),
        )
    flags = []
    for key in ("wait", "chat"):
        value = data.get(key, False)
        if not isinstance(value, bool):
            return _error(
                400, gettext_noop("'{key}'는 true 또는 false여야 합니다: {value}", key=key, value=repr(value)[:40])
            )
        flags.append(value)
    return prompt, tokens, flags[0], flags[1]


@require_POST
@staff_required(api=True)
async def generate(request: HttpRequest) -> JsonResponse:
    data = _json_body(request)
    if isinstance(data, JsonResponse):
        return data
    options = _options(data)
    if isinstance(options, JsonResponse):
        return options
    prompt, max_new_tokens, wait, chat = options
    try:
        started = await off_loop(
            lambda: generations.generation_start(prompt=prompt, max_new_tokens=max_new_tokens, chat=chat)
        )
    except generations.GenerationRefused as refused:
        return _error(409, refused.message, generation=gen_state.current())
    if not wait:
        return JsonResponse({"generation": started}, status=202)
    deadline = asyncio.get_running_loop().time() + WAIT_LIMIT_S
    current = gen_state.current()
    while current is not None and current.get("id") == started["id"] and current.get("state") == "running":
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.to_thread(gen_state.wait_ended, 1.0)
        current = gen_state.current()
    result = current if current is not None and current.get("id") == started["id"] else started
    return JsonResponse({k: result.get(k) for k in RESULT_FIELDS}, status=200)


@require_POST
@staff_required(api=True)
async def generate_cancel(request: HttpRequest) -> JsonResponse:
    stopped = generations.generation_cancel()
    if stopped is None:
        return _error(409, gettext_noop("진행 중인 생성이 없습니다."))
    return JsonResponse({"generation": stopped}, status=202)
