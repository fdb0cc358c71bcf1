"""The picker says, before the click, whether each model fits the chosen device: in a real browser
(Debian's Chromium through Playwright) against a live daphne whose model host is still importing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import test_browser
from .conftest import LiveServer, migrate, server_env

pytestmark = pytest.mark.browser
browser = test_browser.browser  # the same Chromium fixture, launched once for this module

VERDICT = """([name, fit]) => {
  const o = Array.from(document.querySelectorAll('#model-select option')).find((o) => o.value === name);
  return !!o && o.dataset.fit === fit;
}"""


@pytest.fixture(scope="module")
def server(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = server_env(models_root, tmp_path_factory.mktemp("fit-browser") / "db.sqlite3")
    migrate(env)
    live = LiveServer(env).start()  # not warm: the first answers are "checking", then the verdicts
    yield live
    live.stop()


def open_page(browser: Any, server: LiveServer, locale: str) -> tuple[Any, Any]:
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_function(VERDICT, arg=["tiny", "fits"], timeout=180_000)
    return context, page


def test_the_picker_says_whether_each_model_fits_in_korean_and_in_english(browser: Any, server: LiveServer) -> None:
    context, page = open_page(browser, server, "ko-KR")
    assert "✓ 맞음" in page.locator("#model-select option[value='tiny']").text_content()
    page.select_option("#model-select", "medium")
    note = page.locator("#fit-note")
    note.wait_for(state="visible")
    assert "✓ 맞음" in note.text_content() and "필요" in note.text_content() and "cpu" in note.text_content()
    need = page.evaluate("() => document.getElementById('fit-note').textContent")
    page.select_option("#dtype-select", "float32")  # asked again: the bfloat16 checkpoint needs twice the bytes
    page.wait_for_function("(before) => document.getElementById('fit-note').textContent !== before", arg=need)
    context.close()

    context, page = open_page(browser, server, "en-US")
    text = page.locator("#model-select option[value='tiny']").text_content()
    assert "✓ fits" in text and "맞음" not in text
    page.select_option("#model-select", "medium")
    page.locator("#fit-note").wait_for(state="visible")
    assert (
        "needs" in page.locator("#fit-note").text_content()
        and "free on cpu" in page.locator("#fit-note").text_content()
    )
    context.close()
