"""Django's middleware under ASGI run on the event loop, and still do their jobs there.

``django.test.AsyncClient`` drives the real ASGI handler in this process, so the middleware
run in async mode exactly as under daphne.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref import sync as asgiref_sync
from asgiref.sync import async_to_sync
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``sync_to_async`` call (a hand-off to a thread), by the function it runs."""
    hops: list[str] = []
    real = asgiref_sync.SyncToAsync.__call__

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(asgiref_sync.SyncToAsync, "__call__", counted)
    return hops


def test_an_asgi_request_makes_no_thread_hop_per_middleware(monkeypatch: pytest.MonkeyPatch) -> None:
    hops = count_hops(monkeypatch)

    async def body() -> None:
        client = AsyncClient()
        res = await client.post("/api/load", data={"model": 5}, content_type="application/json")
        assert res.status_code == 400
        hops.clear()
        res = await client.post("/api/load", data={"model": 5}, content_type="application/json")
        assert res.status_code == 400

    async_to_sync(body)()
    ours = {
        "SessionMiddleware",
        "LocaleMiddleware",
        "CommonMiddleware",
        "AuthenticationMiddleware",
        "MessageMiddleware",
    }
    assert not [h for h in hops if h.split(".")[0] in ours], hops
    # Left: Django's Security, CSRF and X-Frame-Options hooks (kept for ``check --deploy``), the
    # request signals, the sync view and closing the response: 10, where the whole stack made 20.
    assert len(hops) <= 10, hops


def test_csrf_is_still_enforced_on_the_loop() -> None:
    async def body() -> None:
        client = AsyncClient(enforce_csrf_checks=True)
        res = await client.post("/api/cancel", data="{}", content_type="application/json")
        assert res.status_code == 403 and "X-CSRFToken" in json.loads(res.content)["error"]
        page = await client.get("/")
        token = page.cookies["csrftoken"].value
        res = await client.post(
            "/api/cancel", data="{}", content_type="application/json", headers={"X-CSRFToken": token}
        )
        assert res.status_code == 409  # past CSRF: nothing to cancel

    async_to_sync(body)()


def test_the_language_chosen_on_the_loop_reaches_the_view() -> None:
    async def body() -> None:
        client = AsyncClient()
        ko = await client.post("/api/load", data={}, content_type="application/json")
        en = await client.post("/api/load", data={}, content_type="application/json", headers={"Accept-Language": "en"})
        assert "모델 이름" in json.loads(ko.content)["error"]
        assert "model" in json.loads(en.content)["error"] and "모델" not in json.loads(en.content)["error"]
        assert en["Content-Language"] == "en" and ko["Content-Language"] == "ko"

    async_to_sync(body)()


def test_a_login_through_asgi_saves_its_session(settings: Any, django_user_model: Any) -> None:
    """The one hook that writes (a modified session's save) still runs, in Django's sync thread."""
    settings.MACTUNER_REQUIRE_STAFF = True
    django_user_model.objects.create_user("ops", password="pw-123456789", is_staff=True)

    async def body() -> None:
        client = AsyncClient()
        assert (await client.get("/api/status")).status_code == 403
        await client.get("/admin/login/")
        res = await client.post("/admin/login/?next=/", {"username": "ops", "password": "pw-123456789"})
        assert res.status_code == 302 and "sessionid" in res.cookies
        assert (await client.get("/api/status")).status_code == 200
        page = await client.get("/")
        assert page.status_code == 200 and page["X-Frame-Options"] == "DENY" and "Cookie" in page["Vary"]

    async_to_sync(body)()


def test_the_start_up_reads_every_page_language_catalog_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Locale`` activates catalogs on the event loop: they must be in memory before requests come."""
    from django.conf import settings
    from django.utils.translation import trans_real

    from loader import startup

    monkeypatch.setattr(trans_real, "_translations", {})
    startup._read_catalogs()
    assert {code for code, _ in settings.LANGUAGES} <= set(trans_real._translations)


def noisy(request: Any) -> Any:
    """Messages too big for the cookie: Django's fallback storage keeps them in the session."""
    import secrets

    from django.contrib import messages
    from django.http import HttpResponse

    for _ in range(5):
        messages.info(request, secrets.token_urlsafe(900))
    return HttpResponse("ok")


def test_messages_that_spill_into_the_session_are_stored_off_the_loop(settings: Any, django_user_model: Any) -> None:
    from django.urls import path

    import mactuner_site.urls

    settings.ROOT_URLCONF = type("Urls", (), {"urlpatterns": [path("noisy/", noisy), *mactuner_site.urls.urlpatterns]})
    django_user_model.objects.create_user("ops", password="pw-123456789", is_staff=True)

    async def body() -> None:
        client = AsyncClient()
        await client.post("/admin/login/", {"username": "ops", "password": "pw-123456789"})
        res = await client.get("/noisy/")  # the session is not loaded before the messages are stored
        assert res.status_code == 200

    async_to_sync(body)()
