"""End to end in a real browser: Debian's Chromium driven by Playwright against a live daphne."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mactuner_dev.synth import write_checkpoint

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
# wait_for_function predicates are arrow functions: Playwright evals an expression string on every
# poll, which the page's Content-Security-Policy (no 'unsafe-eval') refuses; a function is evaled once.


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    broken = models_root / "zz-broken"
    shutil.copytree(models_root / "tiny", broken, dirs_exist_ok=True)
    shard = sorted(broken.glob("*.safetensors"))[0]
    with shard.open("r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)
    from mactuner_dev import layouts

    layouts.write_lora(models_root / "zz-lora", models_root / "tiny", "tiny", seed=9)
    env = server_env(models_root, tmp_path_factory.mktemp("browser") / "db.sqlite3", MACTUNER_READ_LIMIT_MBPS="40")
    migrate(env)
    live = LiveServer(env).start().wait_warm()  # the tests watch a long weights stage
    yield live
    live.stop()
    shutil.rmtree(broken, ignore_errors=True)
    shutil.rmtree(models_root / "zz-lora", ignore_errors=True)


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
    page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
    yield page
    page.wait_for_function("() => !(window.MACtuner.state.job && window.MACtuner.state.job.active)", timeout=60_000)
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
        "() => window.MACtuner.state.job && window.MACtuner.state.job.stage === 'weights' && window.MACtuner.state.job.percent > 52",  # past the rate's settling
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
    page.wait_for_function(
        "() => window.MACtuner.state.job && window.MACtuner.state.job.stage === 'weights'", timeout=30_000
    )
    page.click("#cancel-btn")
    page.wait_for_function(
        "() => window.MACtuner.state.job && window.MACtuner.state.job.state === 'cancelled'", timeout=5_000
    )
    assert "취소" in page.inner_text("#progress-title")


def test_reload_mid_load_shows_the_running_job(page: Any) -> None:
    start_load(page, "medium")
    page.wait_for_function("() => window.MACtuner.state.job && window.MACtuner.state.job.percent > 42", timeout=30_000)
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


HANGUL = "[\\uac00-\\ud7a3]"


def wait_success(page: Any) -> int:
    page.wait_for_selector("#progress-box.success", timeout=60_000)
    return int(page.evaluate("window.MACtuner.state.job.id"))


def test_history_panel_and_stage_chart_show_a_finished_load(page: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert "샤드 1개)" in page.inner_text("#model-select"), "tied has 1 shard"
    assert "샤드 3개)" in page.inner_text("#model-select"), "tiny has 3 shards"
    start_load(page, "tied")
    job_id = wait_success(page)
    row = page.locator(f'#history-body tr[data-job-id="{job_id}"]')
    row.wait_for(timeout=5_000)
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "tied" and cells[1] == "웹" and cells[2] == "성공"
    total = page.evaluate("window.MACtuner.state.job.wall_s")  # the click to the end, what the user waited
    assert re.fullmatch(r"\d+(\.\d+)?s", cells[3]) and abs(float(cells[3][:-1]) - total) < 0.06
    assert cells[4].endswith("MB/s") and cells[5] in {"—", "핫", "콜드", "혼합"}
    chart = page.locator("#stage-chart")
    assert chart.is_visible()
    legend = chart.locator("li").evaluate_all("els => els.map(e => e.dataset.stage)")
    assert legend == ["preparing", "tokenizer", "config", "weights", "device", "metadata"]
    assert "가중치" in chart.inner_text()
    widths = chart.locator(".seg").evaluate_all("els => els.map(e => parseFloat(e.style.width))")
    assert abs(sum(widths) - 100) < 0.1
    page.locator("#progress-box").screenshot(path=str(ARTIFACTS / "success-stage-chart.png"))
    page.locator("#history").screenshot(path=str(ARTIFACTS / "history-panel.png"))


def test_second_tab_opened_mid_load_shows_the_running_jobs_options(
    page: Any, browser: Any, server: LiveServer, models_root: Path
) -> None:
    # Not the first model in the list nor the default options, so the second tab cannot show them by chance.
    # And big enough (300 MB at the server's 40 MB/s) that the second tab opens while it still loads.
    copy = models_root / "xx-medium"
    if not copy.exists():
        write_checkpoint(copy, params=150_000_000, shards=4, seed=11)
    try:
        page.reload()
        page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
        page.select_option("#device-select", "cpu")
        page.select_option("#dtype-select", "float32")
        start_load(page, "xx-medium")
        page.wait_for_function(
            "() => window.MACtuner.state.job && window.MACtuner.state.job.stage === 'weights'", timeout=30_000
        )
        context = browser.new_context(locale="ko-KR")
        late = context.new_page()
        late.goto(server.url + "/")
        late.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
        assert late.evaluate("window.MACtuner.state.job.active"), "the load must still be running"
        assert late.input_value("#model-select") == "xx-medium"
        assert late.input_value("#device-select") == "cpu" and late.input_value("#dtype-select") == "float32"
        late.screenshot(path=str(ARTIFACTS / "late-tab-selectors.png"))
        context.close()
        page.wait_for_selector("#progress-box.success", timeout=60_000)
    finally:
        page.wait_for_function("() => !window.MACtuner.state.job.active", timeout=60_000)
        shutil.rmtree(copy, ignore_errors=True)


def test_english_page_history_panel_has_no_hangul(browser: Any, server: LiveServer) -> None:
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
    assert "1 shard)" in page.inner_text("#model-select") and "3 shards)" in page.inner_text("#model-select")
    for model in ("tied", "zz-broken"):
        start_load(page, model)
        page.wait_for_function(
            "() => window.MACtuner.state.job && !window.MACtuner.state.job.active && window.MACtuner.state.job.id !== 'pending'",
            timeout=60_000,
        )
    panel = page.inner_text("#history")
    assert "Recent loads" in panel and "Succeeded" in panel and "Failed" in panel and "Web" in panel
    assert not re.search(HANGUL, panel), panel
    page.locator("#history").screenshot(path=str(ARTIFACTS / "history-panel-en.png"))
    context.close()


def test_an_adapter_can_be_merged_from_the_page(page: Any) -> None:
    assert page.locator("#merge-row").is_hidden(), "only adapters offer the merge option"
    page.select_option("#model-select", "zz-lora")
    assert page.locator("#merge-row").is_visible()
    page.check("#merge-check")
    page.click("#load-btn")
    page.wait_for_function(
        "() => window.MACtuner.state.job && window.MACtuner.state.job.model === 'zz-lora' && !window.MACtuner.state.job.active",
        timeout=60_000,
    )
    job = page.evaluate("window.MACtuner.state.job")
    assert job["state"] == "succeeded", job
    assert job["metadata"]["adapter"]["merged"] is True


def test_the_loaded_model_answers_on_the_page_streamed_with_its_speed(
    page: Any, browser: Any, server: LiveServer
) -> None:
    start_load(page, "tiny")
    page.wait_for_selector("#progress-box.success", timeout=60_000)
    page.locator("#try-form").wait_for(state="visible")
    page.fill("#try-prompt", "안녕하세요")
    page.fill("#try-tokens", "24")
    page.click("#try-go")
    page.wait_for_function("() => document.getElementById('try-stats').textContent.startsWith('완료')", timeout=60_000)
    stats, answer = page.inner_text("#try-stats"), page.inner_text("#try-output")
    assert "토큰" in stats and "로드 클릭부터" in stats and answer.strip(), (stats, answer)
    # A viewer who opens the page now sees the same answer at once (it is in the first snapshot).
    late = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}).new_page()
    late.goto(server.url + "/")
    late.wait_for_function("() => document.getElementById('try-output').textContent.length > 0", timeout=10_000)
    assert late.inner_text("#try-output") == answer and "tokens" in late.inner_text("#try-stats")
    late.context.close()


def test_a_phone_gets_the_picker_first_all_in_english_and_nothing_wider_than_the_screen(
    browser: Any, server: LiveServer
) -> None:
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844})
    phone = context.new_page()
    phone.goto(server.url + "/")
    phone.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    picker, history = phone.locator("#model-select").bounding_box(), phone.locator("#history").bounding_box()
    assert picker is not None and history is not None and picker["y"] < history["y"] < 2000
    phone.evaluate(
        "() => { document.getElementById('try-output').textContent = ''; }"
    )  # the model's words, not the UI's
    text = phone.inner_text("body")
    assert not re.search(r"[\uac00-\ud7a3]", text.replace("한국어", "")), (
        text
    )  # the language menu names Korean in Korean
    assert phone.get_attribute("#progress-box .bar", "aria-labelledby") == "progress-title"
    context.close()


def test_a_checkpoint_written_while_the_page_is_open_appears_marked_newest(page: Any, models_root: Path) -> None:
    """A training run saves checkpoint-1500 while the page is open: no refresh, the picker lists it
    within seconds (pushed over the websocket), marked its run's newest, and the page says so."""
    from mactuner_dev import layouts

    run = models_root / "zz-run"
    option = "(v) => [...document.querySelectorAll('#model-select option')].find((o) => o.value === v)"
    try:
        layouts.write_trainer_run(run, steps=(500,), params=200_000)
        page.wait_for_function(f"() => ({option})('zz-run/checkpoint-500')", timeout=30_000)
        layouts.write_trainer_run(run, steps=(1500,), params=200_000)
        page.wait_for_function(
            f"() => {{ const o = ({option})('zz-run/checkpoint-1500'); return o && o.classList.contains('is-newest'); }}",
            timeout=30_000,
        )
        newest = page.eval_on_selector("#model-select option[value='zz-run/checkpoint-1500']", "(o) => o.textContent")
        older = page.eval_on_selector("#model-select option[value='zz-run/checkpoint-500']", "(o) => o.className")
        assert "최신" in newest and "is-newest" not in older, (newest, older)
        assert "zz-run/checkpoint-1500" in page.text_content("#notice")
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_a_phone_reads_every_history_column_with_the_whole_model_name(
    browser: Any, page: Any, server: LiveServer
) -> None:
    """390 px: the history is one small card per load, no column cut off and no "d…" for a name."""
    start_load(page, "tiny")
    wait_success(page)
    for locale in ("ko-KR", "en-US"):
        context = browser.new_context(locale=locale, viewport={"width": 390, "height": 844})
        phone = context.new_page()
        phone.goto(server.url + "/")
        phone.wait_for_function("() => document.querySelectorAll('#history-body tr').length > 0", timeout=10_000)
        names = phone.locator("#history-body td.name").all_inner_texts()
        assert "tiny" in names, names
        # Cut off: the cell scrolls, its text is wider than the cell (an ellipsis), or it is off the screen.
        clipped = phone.evaluate(
            """() => [...document.querySelectorAll('#history-body td')].filter((td) => {
              const range = document.createRange(); range.selectNodeContents(td);
              const box = td.getBoundingClientRect();
              return td.scrollWidth > td.clientWidth || range.getBoundingClientRect().width > td.clientWidth + 0.5
                || box.right > window.innerWidth || box.width === 0;
            }).map((td) => td.dataset.label + ': ' + td.textContent)"""
        )
        assert not clipped, (locale, clipped)
        labels = phone.evaluate(
            "() => getComputedStyle(document.querySelector('#history-body td + td'), '::before').content"
        )
        assert labels.strip('"').strip(), "each value says which column it is"
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        context.close()


def test_korean_wraps_between_words_never_inside_one(page: Any) -> None:
    """ "남은 시간" in a box one syllable too narrow: the line breaks at the space, not in "시간"."""
    split = page.evaluate(
        """() => {
          const box = document.createElement("div"), probe = document.createElement("span");
          box.className = "numbers"; probe.textContent = "남은 시";
          document.querySelector(".settings-panel").append(box); box.append(probe);
          const width = probe.getBoundingClientRect().width;
          box.textContent = "남은 시간 8.5s"; box.style.display = "block"; box.style.width = width + 1 + "px";
          const text = box.firstChild, range = document.createRange();
          const at = (i) => { range.setStart(text, i); range.setEnd(text, i + 1); return range.getBoundingClientRect().top; };
          const result = {si: at(3), gan: at(4)};
          box.remove();
          return result;
        }"""
    )
    assert split["si"] == split["gan"], split
    for selector in ("#progress-message", "#progress-detail", ".workspace p", "#history"):
        assert page.eval_on_selector(selector, "(el) => getComputedStyle(el).wordBreak") == "keep-all", selector


def test_the_try_form_shows_no_answer_box_before_there_is_an_answer(page: Any) -> None:
    start_load(page, "tiny")
    wait_success(page)
    page.locator("#try-form").wait_for(state="visible")
    page.evaluate("() => { document.getElementById('try-output').textContent = ''; }")  # no generation yet
    assert page.locator("#try-output").is_hidden()
    page.evaluate("() => { document.getElementById('try-output').textContent = 'an answer'; }")
    assert page.locator("#try-output").is_visible()
