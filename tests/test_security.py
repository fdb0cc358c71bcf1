"""Security: staff-only when exposed, production checks, host/origin checks, remote code refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from .conftest import PYTHON, ROOT, wait_finished

PROD_ENV = {
    "MACTUNER_PRODUCTION": "1",
    "DJANGO_SECRET_KEY": "x7Qk2-this-is-a-test-only-secret-with-enough-entropy-9fPz3LmN0vB8",
    "DJANGO_ALLOWED_HOSTS": "mactuner.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://mactuner.example.com",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "MACTUNER_"))}
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=base | env, capture_output=True, text=True)


def test_deploy_check_passes_with_the_documented_production_environment() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PROD_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = dict(PROD_ENV)
    del env["DJANGO_SECRET_KEY"]
    result = manage("check", **env)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.django_db
def test_exposed_deployment_requires_a_logged_in_staff_user(settings: Any, django_user_model: Any) -> None:
    settings.MACTUNER_REQUIRE_STAFF = True
    anonymous = Client()
    assert anonymous.get("/api/status").status_code == 403
    assert anonymous.get("/api/models").status_code == 403
    assert anonymous.post("/api/load", data={"model": "tiny"}, content_type="application/json").status_code in {403}
    page = anonymous.get("/")
    assert page.status_code == 302 and "/admin/login/" in page["Location"]
    user = django_user_model.objects.create_user("plain", password="pw-123456789")
    plain = Client()
    plain.force_login(user)
    assert plain.get("/api/status").status_code == 403
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("ops", password="pw-123456789", is_staff=True))
    assert staff.get("/api/status").status_code == 200 and staff.get("/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_exposed_websocket_refuses_anonymous_clients(settings: Any) -> None:
    from mactuner_site.asgi import application

    settings.MACTUNER_REQUIRE_STAFF = True

    async def body() -> None:
        comm = WebsocketCommunicator(
            application, "/ws/loader/", headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
        )
        connected, _ = await comm.connect()
        assert not connected

    async_to_sync(body)()


@pytest.mark.django_db
def test_only_loopback_hosts_are_served_by_default(client: Client) -> None:
    assert client.get("/api/status", HTTP_HOST="127.0.0.1:8000").status_code == 200
    assert client.get("/api/status", HTTP_HOST="evil.example.com").status_code == 400


def test_run_script_binds_loopback_by_default() -> None:
    script = (ROOT / "scripts" / "run.sh").read_text()
    assert '-b "${MACTUNER_BIND:-127.0.0.1}"' in script


@pytest.mark.django_db(transaction=True)
def test_remote_code_model_is_refused_with_the_reason(client: Client, broken: Path, models_root: Path) -> None:

    config = json.loads((broken / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    target = models_root / "zz-remote-code"  # the API loads names from the list only
    shutil.copytree(broken, target)
    try:
        res = client.post("/api/load", data={"model": "zz-remote-code"}, content_type="application/json")
        assert res.status_code == 202
        job = wait_finished(res.json()["job"]["id"])
        assert job.state == "failed" and job.error_code == "remote_code_refused"
        assert "trust_remote_code" in job.error_message
        snapshot = client.get("/api/status").json()["job"]
        assert snapshot["error"]["code"] == "remote_code_refused"
    finally:
        shutil.rmtree(target)
