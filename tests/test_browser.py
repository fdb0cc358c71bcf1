"""End to end in a real browser: Debian's Chromium driven by Playwright against a live daphne."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, LiveServer, migrate, server_env

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    broken = models_root / "zz-broken"
    shutil.copytree(models_root / "tiny", broken, dirs_exist_ok=True)
    shard = sorted(broken.glob("*.safetensors"))[0]
    with shard.open("r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)
    env = server_env(models_root, tmp_path_factory.mktemp("browser") / "db.sqlite3", MACTUNER_READ_LIMIT_MBPS="40")
    migrate(env)
    live = LiveServer(env).start()
    yield live
    live.stop()
    shutil.rmtree(broken, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("window.MACtuner && window.MACtuner.modelsLoaded")
    yield page
    page.wait_for_function("!(window.MACtuner.state.job && window.MACtuner.state.job.active)", timeout=60_000)
    context.close()


def start_load(page: Any, model: str) -> None:
    page.select_option("#model-select", model)
    page.click("#load-btn")


def test_load_shows_progress_then_100_percent_and_metadata(page: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    start_load(page, "medium")
    box = page.locator("#progress-box")
    box.wait_for(state="visible", timeout=1000)
    assert "로드 중..." in box.inner_text()
    page.wait_for_function(
        "window.MACtuner.state.job && window.MACtuner.state.job.stage === 'weights' && window.MACtuner.state.job.percent > 45",
        timeout=30_000,
    )
    assert "샤드" in page.inner_text("#progress-detail") and "MB/s" in page.inner_text("#progress-detail")
    assert page.is_disabled("#load-btn") and page.is_disabled("#model-select") and page.is_enabled("#cancel-btn")
    box.screenshot(path=str(ARTIFACTS / "loading-box.png"))
    page.wait_for_selector("#progress-box.success", timeout=60_000)
    assert "✅ 모델 로드 완료!" in box.inner_text()
    assert page.inner_text("#progress-percent") == "100%"
    card = page.locator("#metadata-card")
    card.wait_for(state="visible")
    assert "medium" in card.inner_text() and "LlamaForCausalLM" in card.inner_text()
    page.screenshot(path=str(ARTIFACTS / "load-success.png"), full_page=True)
    assert page.is_enabled("#unload-btn")


def test_broken_model_shows_red_error(page: Any) -> None:
    start_load(page, "zz-broken")
    page.wait_for_selector("#progress-box.error", timeout=30_000)
    title = page.inner_text("#progress-title")
    assert title.startswith("❌ 오류:") and "잘렸습니다" in title
    color = page.eval_on_selector("#progress-title", "e => getComputedStyle(e).color")
    assert color == "rgb(209, 36, 47)"
    page.screenshot(path=str(ARTIFACTS / "load-error.png"))
    assert page.is_enabled("#load-btn")


def test_cancel_button_stops_the_load(page: Any) -> None:
    start_load(page, "medium")
    page.wait_for_function("window.MACtuner.state.job && window.MACtuner.state.job.stage === 'weights'", timeout=30_000)
    page.click("#cancel-btn")
    page.wait_for_function(
        "window.MACtuner.state.job && window.MACtuner.state.job.state === 'cancelled'", timeout=5_000
    )
    assert "취소" in page.inner_text("#progress-title")


def test_reload_mid_load_shows_the_running_job(page: Any) -> None:
    start_load(page, "medium")
    page.wait_for_function("window.MACtuner.state.job && window.MACtuner.state.job.percent > 42", timeout=30_000)
    before = page.evaluate("window.MACtuner.state.job.percent")
    page.reload()
    # Straight from the server-rendered state, before any socket message: never a blank box.
    assert page.locator("#progress-box").is_visible()
    state = page.evaluate("JSON.parse(document.getElementById('initial-state').textContent).job")
    assert state["state"] == "running" and state["percent"] >= before
    assert "로드 중..." in page.inner_text("#progress-box")
    page.wait_for_selector("#progress-box.success", timeout=60_000)


def test_english_browser_gets_english_page(browser: Any, server: LiveServer) -> None:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(server.url + "/")
    assert "Choose a model" in page.inner_text(".settings-panel")
    context.close()
