"""Issue #19 items 14-16: long names stay on screen, a Content-Security-Policy backs the escaping,
and the metadata card names the class that was loaded, not the one config.json claims.

Header and markup checks use the Django test client; the layout and the policy's effect in a real
browser use Debian's Chromium against a live daphne (skipped where it is not installed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob

from .conftest import PYTHON, ROOT, LiveServer, migrate, server_env, wait_finished

DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "frame-ancestors": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "object-src": "'none'",
}
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
LONG_NAME = ("Llama3FineTunedCheckpoint" * 10)[:250]  # no hyphen or space: nowhere to break a line
EVIL_ARCH = "Evil\u0430ForCausalLM"  # a Cyrillic "а" where the Latin "a" would be
VIEWPORT = {"width": 1280, "height": 800}
ARTIFACTS = ROOT / "artifacts"


def policy_of(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    pairs = (part.strip().split(" ", 1) for part in header.split(";") if part.strip())
    return {name: rest for name, rest in pairs}


def assert_strict_policy(response: Any) -> None:
    policy = policy_of(response)
    for name, sources in DIRECTIVES.items():
        assert policy[name] == sources, (name, policy)
    # The page's socket: same origin (plus its host spelled out for CSP level 2 browsers), never any host.
    connect = policy["connect-src"].split()
    assert connect[0] == "'self'" and "ws:" not in connect and "wss:" not in connect, connect
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]


def inline_code(html: str) -> list[str]:
    """What a strict policy blocks: executable inline <script>, <style>, style="…", on…= handlers."""
    found = [m for m in re.findall(r"<script\b[^>]*>", html) if "src=" not in m and "application/json" not in m]
    found += re.findall(r"<style\b", html)
    found += re.findall(r"\sstyle\s*=", html)
    found += re.findall(r"<[^>]*\son[a-z]+\s*=", html)
    found += re.findall(r"javascript:", html)
    return found


@pytest.fixture
def _empty_slot() -> None:
    MODEL_HOST.unload()


@pytest.mark.django_db(transaction=True)
def test_every_html_response_carries_the_policy(client: Client, admin_client: Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert_strict_policy(page)
    assert "ws://testserver" in policy_of(page)["connect-src"], "the socket's own host, spelled out"
    login = client.get("/admin/login/")
    assert login.status_code == 200
    assert_strict_policy(login)
    changelist = admin_client.get("/admin/loader/loadjob/")
    assert changelist.status_code == 200
    assert_strict_policy(changelist)
    missing = client.get("/no-such-page/")
    assert missing.status_code == 404
    assert_strict_policy(missing)
    assert_strict_policy(client.get("/api/models"))


@pytest.mark.django_db(transaction=True)
def test_an_ipv6_host_keeps_self_only(client: Client, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["[::1]"]
    policy = policy_of(client.get("/", HTTP_HOST="[::1]:8000"))
    assert policy["connect-src"] == "'self'", "CSP has no syntax for an IPv6 host"


@pytest.mark.django_db(transaction=True)
def test_page_and_admin_markup_have_no_inline_code(client: Client, admin_client: Client, _empty_slot: None) -> None:
    res = client.post("/api/load", data=json.dumps({"model": "tiny", "device": "cpu"}), content_type="application/json")
    assert res.status_code == 202, res.content
    job = wait_finished(res.json()["job"]["id"])
    assert job.state == LoadJob.State.SUCCEEDED
    for path, who in [
        ("/", client),
        ("/admin/login/", client),
        ("/admin/", admin_client),
        ("/admin/loader/loadjob/", admin_client),
        (f"/admin/loader/loadjob/{job.pk}/change/", admin_client),
    ]:
        html = who.get(path).content.decode()
        assert inline_code(html) == [], path
    chart = admin_client.get(f"/admin/loader/loadjob/{job.pk}/change/").content.decode()
    widths = [float(w) for w in re.findall(r'<svg class="seg seg-\w+" width="([\d.]+)%"', chart)]
    assert len(widths) == 6 and sum(widths) == pytest.approx(100, abs=0.1), "the admin chart, without style=…"


@pytest.fixture
def evil_models(models_root: Path, tmp_path: Path, settings: Any) -> Path:
    """A models folder with one checkpoint whose config claims a look-alike class name."""
    root = tmp_path / "models"
    shutil.copytree(models_root / "tiny", root / "evil-arch")
    config_path = root / "evil-arch" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["model_type"] == "llama"
    config["architectures"] = [EVIL_ARCH]
    config_path.write_text(json.dumps(config))
    settings.MACTUNER_MODELS_DIR = root
    return root


@pytest.mark.django_db(transaction=True)
def test_metadata_names_the_class_that_was_loaded(client: Client, evil_models: Path, _empty_slot: None) -> None:
    res = client.post(
        "/api/load", data=json.dumps({"model": "evil-arch", "device": "cpu"}), content_type="application/json"
    )
    assert res.status_code == 202, res.content
    job = wait_finished(res.json()["job"]["id"])
    assert job.state == LoadJob.State.SUCCEEDED, (job.error_code, job.error_message)
    assert job.metadata["architecture"] == "LlamaForCausalLM"
    assert job.metadata["model_class"] == "LlamaForCausalLM"
    assert job.metadata["claimed_architecture"] == EVIL_ARCH, "the claim is kept, apart from the class"


@pytest.mark.django_db(transaction=True)
def test_an_honest_config_has_no_separate_claim(client: Client, _empty_slot: None) -> None:
    res = client.post("/api/load", data=json.dumps({"model": "tied", "device": "cpu"}), content_type="application/json")
    job = wait_finished(res.json()["job"]["id"])
    assert job.metadata["architecture"] == "LlamaForCausalLM" and "claimed_architecture" not in job.metadata


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_api() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory, sync_api: Any) -> Iterator[LiveServer]:
    """A live server whose models folder holds a 250-character name (and the evil-arch checkpoint)."""
    base = tmp_path_factory.mktemp("hardening")
    root = base / "models"
    shutil.copytree(models_root / "tied", root / "tied")
    shutil.copytree(models_root / "tiny", root / LONG_NAME)
    shutil.copytree(models_root / "tiny", root / "evil-arch")
    config_path = root / "evil-arch" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "architectures": [EVIL_ARCH]}))
    env = server_env(root, base / "db.sqlite3", DJANGO_SUPERUSER_PASSWORD="hardening-pass-1")
    migrate(env)
    subprocess.run(
        [PYTHON, "manage.py", "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    live = LiveServer(env).start().wait_warm()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser(sync_api: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Violations:
    """Every CSP report a page makes: the console line and the DOM event, whichever comes."""

    def __init__(self, page: Any) -> None:
        self.console: list[str] = []
        page.on("console", self._on_console)
        # Init scripts come in through the devtools protocol, which the page's policy does not govern.
        page.add_init_script(
            "window.__csp = []; document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        self.page = page

    def _on_console(self, msg: Any) -> None:
        if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
            self.console.append(msg.text)

    def all(self) -> list[str]:
        return self.console + list(self.page.evaluate("window.__csp || []"))


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(locale="ko-KR", viewport=VIEWPORT)
    page = context.new_page()
    page.violations = Violations(page)
    yield page
    context.close()


def open_page(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/")
    page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")


def load(page: Any, model: str) -> dict[str, Any]:
    page.select_option("#model-select", model)
    page.click("#load-btn")
    page.wait_for_function(
        "(m) => { const j = window.MACtuner.state.job; return j && j.model === m && j.id !== 'pending' && !j.active; }",
        arg=model,
        timeout=60_000,
    )
    job: dict[str, Any] = page.evaluate("window.MACtuner.state.job")
    return job


def assert_fits(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORT["width"], f"the page scrolls sideways: {width} px"
    for selector in (".settings-panel", "#load-btn", "#cancel-btn", "#model-select"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] + box["width"] <= VIEWPORT["width"], (selector, box)
    if page.locator("#progress-box").is_visible():
        box = page.locator("#progress-box").bounding_box()
        assert box["x"] + box["width"] <= VIEWPORT["width"], ("#progress-box", box)


def test_a_250_character_name_stays_on_screen_under_the_policy(page: Any, server: LiveServer) -> None:
    open_page(page, server)
    assert page.inner_text("#connection") == "실시간 연결됨", "the socket connects under connect-src"
    assert_fits(page)
    option = page.locator("#model-select option", has_text=LONG_NAME[:40])
    title = option.get_attribute("title") or ""
    assert title.split("\n")[0] == LONG_NAME, "the whole name on hover (its first line; the fit hint may follow)"
    job = load(page, LONG_NAME)
    assert job["state"] == "succeeded", job.get("error")
    page.locator("#metadata-card").wait_for(state="visible")
    assert page.get_attribute("#meta-name", "title") == LONG_NAME
    assert_fits(page)
    # Straight from the server: the name is among the last 10 history rows, cut with its title.
    open_page(page, server)
    page.locator(f'#history-body tr[data-job-id="{job["id"]}"]').wait_for(timeout=5_000)
    assert_fits(page)
    cell = page.locator(f'#history-body tr[data-job-id="{job["id"]}"] td.name')
    assert cell.get_attribute("title") == LONG_NAME
    assert cell.evaluate("td => td.scrollWidth > td.clientWidth"), "cut with an ellipsis, not wrapped"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "long-name.png"), full_page=True)
    assert page.violations.all() == []


def test_the_card_shows_the_loaded_class_and_the_claim_apart(page: Any, server: LiveServer) -> None:
    open_page(page, server)
    job = load(page, "evil-arch")
    assert job["state"] == "succeeded", job.get("error")
    card = page.locator("#metadata-card")
    card.wait_for(state="visible")
    row = card.locator("dd", has_text="LlamaForCausalLM")
    assert row.count() == 1
    assert row.locator(".claimed").inner_text() == f"config.json: {EVIL_ARCH}"
    assert page.violations.all() == []


def test_language_menu_works_without_inline_script(page: Any, server: LiveServer) -> None:
    open_page(page, server)
    with page.expect_navigation():
        page.select_option(".lang-switch select", "en")
    page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
    assert "Choose a model" in page.inner_text(".settings-panel")
    assert page.evaluate("window.MACTUNER_LANG") == "en"
    assert page.violations.all() == []


def test_the_admin_works_under_the_policy(page: Any, server: LiveServer) -> None:
    page.goto(server.url + "/admin/login/?next=/admin/loader/loadjob/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "hardening-pass-1")
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert page.url.endswith("/admin/loader/loadjob/"), page.url
    rows = page.locator("#result_list tbody tr")
    assert rows.count() >= 1
    # The stylesheets apply (not blocked): the admin's header has its colours.
    assert page.eval_on_selector("#header", "e => getComputedStyle(e).display") == "flex"
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_selector(".stage-chart .seg")
    widths = page.locator(".stage-chart .seg").evaluate_all("els => els.map(e => e.getBoundingClientRect().width)")
    bar = page.eval_on_selector(".stage-chart .stage-bar", "e => e.getBoundingClientRect().width")
    assert sum(widths) == pytest.approx(bar, abs=2 * len(widths)), "segments fill the bar without style=…"
    assert page.violations.all() == []
