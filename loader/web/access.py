"""Who may use the dashboard. Locally (127.0.0.1) everyone; once exposed, logged-in staff only."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.translation import gettext


def staff_required(api: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        def refusal(request: HttpRequest) -> HttpResponse:
            if api:
                return JsonResponse({"error": gettext("로그인이 필요합니다(스태프 계정).")}, status=403)
            return redirect_to_login(request.get_full_path())

        if iscoroutinefunction(view):  # async views: the user is looked up without blocking the loop

            @wraps(view)
            async def awrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if settings.MACTUNER_REQUIRE_STAFF:
                    user = await request.auser()
                    if not (user.is_authenticated and user.is_staff):
                        return refusal(request)
                return await view(request, *args, **kwargs)

            return awrapped

        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if settings.MACTUNER_REQUIRE_STAFF and not (user.is_authenticated and user.is_staff):
                return refusal(request)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
