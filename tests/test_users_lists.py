"""What grows and what the machine lacks, as a user meets them (#20 items 5, 6, 7, 9): the job
history pages back (``/api/jobs?before=``), the device menu offers only what exists and says why,
a cancelled reload names the model it had already unloaded, and the terminal speaks the locale's
language from its first line, lines ``--list`` up and documents its exit codes."""

from __future__ import annotations

import json
import os
import platform
import pty
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from loader.jobs.local import MODEL_HOST
from loader.jobs.models import LoadJob
from loader.management import launch
from loader.management.commands.loadmodel import cell_width, list_table, wrap_columns
from loader.web import devices

from .conftest import PYTHON, ROOT, LiveServer, migrate, server_env, wait_finished

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _finished_jobs(count: int) -> list[int]:
    return [LoadJob.objects.create(model_name=f"m{i}", model_path=f"/m/m{i}", state="failed").pk for i in range(count)]


# -- the job history pages back (item 5) ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_jobs_page_back_with_before_and_say_when_more_remain(client: Client) -> None:
    ids = _finished_jobs(23)[::-1]  # newest first
    first = client.get("/api/jobs").json()
    assert [j["id"] for j in first["jobs"]] == ids[:10] and first["more"] is True, "10 by default"
    assert set(first["jobs"][0]) >= {"id", "state", "model", "created_at", "detail"}, "the snapshot shape"
    second = client.get("/api/jobs", {"limit": 10, "before": ids[9]}).json()
    assert [j["id"] for j in second["jobs"]] == ids[10:20] and second["more"] is True
    last = client.get("/api/jobs", {"limit": 10, "before": ids[19]}).json()
    assert [j["id"] for j in last["jobs"]] == ids[20:] and last["more"] is False
    exact = client.get("/api/jobs", {"limit": 3, "before": ids[19]}).json()
    assert len(exact["jobs"]) == 3 and exact["more"] is False, "exactly the rest: nothing more"
    assert client.get("/api/jobs", {"limit": 100}).json()["more"] is False
    assert client.get("/api/jobs", {"before": ids[-1]}).json() == {"jobs": [], "more": False}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("query", "word"), [
    ({"before": "0"}, "before"), ({"before": "abc"}, "before"), ({"before": "-3"}, "before"),
    ({"before": "1.5"}, "before"), ({"before": ""}, "before"), ({"limit": "101"}, "limit"), ({"limit": "0"}, "limit"),
])  # fmt: skip
def test_bad_paging_parameters_are_400_in_the_requests_language(
    client: Client, query: dict[str, str], word: str
) -> None:
    english = client.get("/api/jobs", query, HTTP_ACCEPT_LANGUAGE="en")
    korean = client.get("/api/jobs", query, HTTP_ACCEPT_LANGUAGE="ko")
    assert english.status_code == korean.status_code == 400
    assert word in english.json()["error"] and not HANGUL.search(english.json()["error"]), english.json()
    assert word in korean.json()["error"] and HANGUL.search(korean.json()["error"]), korean.json()
    assert client.get("/api/jobs?before=5&before=6").status_code == 400, "a repeated before is ambiguous"


# -- the device menu (item 6) --------------------------------------------------------------------------


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one without a GPU driver, whatever the test machine has."""
    monkeypatch.setattr(devices, "cuda_driver_present", lambda: False)


@pytest.mark.django_db(transaction=True)
def test_the_device_menu_disables_what_this_machine_lacks_and_says_why(client: Client, no_gpu: None) -> None:
    for lang, words in (("en", "no NVIDIA (CUDA) GPU driver"), ("ko", "NVIDIA(CUDA) GPU 드라이버가 없습니다")):
        page = client.get("/", HTTP_ACCEPT_LANGUAGE=lang).content.decode()
        menu = page.split('id="device-select">')[1].split("</select>")[0]
        options = dict(re.findall(r'<option value="(\w+)"([^>]*)>', menu))
        assert set(options) == {"auto", "mps", "cuda", "cpu"}
        assert "disabled" not in options["auto"] and "disabled" not in options["cpu"]
        assert "disabled" in options["cuda"] and words in options["cuda"], options["cuda"]
        assert "disabled" in options["mps"], "this Linux test machine is not a Mac"
        why = page.split('id="device-why"')[1].split("</ul>")[0]
        assert words in why and 'data-device="mps"' in why


def test_mps_reasons_come_from_the_mac_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.mps_unavailable_reason() is not None  # not a Mac
    monkeypatch.setattr(devices.sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(platform, "mac_ver", lambda: ("15.1", ("", "", ""), "arm64"))
    assert devices.mps_unavailable_reason() is None, "an Apple-Silicon Mac on macOS 15 offers MPS"
    monkeypatch.setattr(platform, "mac_ver", lambda: ("13.6", ("", "", ""), "arm64"))
    reason = devices.mps_unavailable_reason()
    assert reason is not None and "13.6" in reason, "macOS 13: the Mac's own words"


@pytest.mark.django_db(transaction=True)
def test_loading_on_a_missing_device_is_refused_before_any_job(client: Client, no_gpu: None) -> None:
    for lang in ("en", "ko"):
        res = client.post(
            "/api/load", data=json.dumps({"model": "tiny", "device": "cuda"}), content_type="application/json",
            HTTP_ACCEPT_LANGUAGE=lang,
        )  # fmt: skip
        assert res.status_code == 400, res.content
        error = res.json()["error"]
        assert "cuda" in error and "CUDA" in error and bool(HANGUL.search(error)) == (lang == "ko"), error
    assert not LoadJob.objects.exists(), "refused before a job starts"


@pytest.mark.django_db(transaction=True)
def test_this_machine_without_a_gpu_driver_refuses_cuda(client: Client) -> None:
    if devices.cuda_driver_present():
        pytest.skip("this machine has a GPU driver")
    res = client.post(
        "/api/load", data=json.dumps({"model": "tiny", "device": "cuda"}), content_type="application/json"
    )
    assert res.status_code == 400 and "CUDA" in res.json()["error"]


# -- a cancelled reload (item 7) -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_reload_names_the_model_it_had_unloaded(client: Client, settings: Any) -> None:
    MODEL_HOST.unload()

    def load(model: str) -> int:
        body = json.dumps({"model": model, "device": "cpu"})
        res = client.post("/api/load", data=body, content_type="application/json", HTTP_ACCEPT_LANGUAGE="en")
        assert res.status_code == 202, res.content
        return int(res.json()["job"]["id"])

    assert wait_finished(load("tiny"), timeout=120).state == "succeeded"
    settings.MACTUNER_READ_LIMIT_MBPS = 5  # "medium" (240 MB) reads for a minute: time to cancel in its weights
    job_id = load("medium")
    deadline = time.monotonic() + 120
    while LoadJob.objects.get(pk=job_id).stage != "weights" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.post("/api/cancel").status_code == 202
    job = wait_finished(job_id, timeout=60)
    assert job.state == "cancelled", job.message
    assert "tiny" in job.message and "unloaded" in job.message, job.message  # in the requester's language
    snapshot = client.get("/api/status").json()
    assert snapshot["job"]["id"] == job_id and snapshot["loaded"] is None
    text = snapshot["job"]["error"]["text"]
    assert "tiny" in text["en"] and "no model is loaded" in text["en"], text
    assert "tiny" in text["ko"] and "언로드" in text["ko"], text


# -- the page: older history, the picker's search, a grey cancel, the device menu (items 5-7) ---------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_page_pages_back_filters_the_picker_and_greys_a_cancel(models_root: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --test installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    from django.db import connection

    ids = _finished_jobs(13)
    LoadJob.objects.filter(pk=ids[-1]).update(state="cancelled", stage="weights", percent=47.0)
    # The server reads this test's (committed) database: the rows above are its history.
    server = LiveServer(server_env(models_root, Path(str(connection.settings_dict["NAME"])))).start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(locale="en-US")
            page.goto(server.url + "/")
            page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
            fill = page.eval_on_selector("#progress-fill", "e => getComputedStyle(e).backgroundColor")
            assert page.locator("#progress-box.cancelled").is_visible() and fill == "rgb(140, 149, 159)", fill
            page.wait_for_function("() => document.querySelectorAll('#history-body tr').length === 10")
            cells = page.locator("#history-body tr").first.locator("td").all_inner_texts()
            assert len(cells) == 7 and re.search(r"\d\d:\d\d:\d\d", cells[6]), cells  # local start time
            page.click("#history-more")
            page.wait_for_function("() => document.querySelectorAll('#history-body tr').length === 13")
            assert page.locator("#history-more").is_hidden(), "nothing older is left"
            page.fill("#model-search", "TIE")
            assert page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)") == ["tied"]
            page.fill("#model-search", "")
            shown = page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)")
            assert {"tiny", "tied", "medium"} <= set(shown)
            assert page.eval_on_selector('#device-select option[value="mps"]', "o => o.disabled")
            assert not page.eval_on_selector('#device-select option[value="cpu"]', "o => o.disabled")
            page.screenshot(path=str(ROOT / "artifacts" / "users-lists.png"), full_page=True)
            browser.close()
    finally:
        server.stop()


# -- the terminal (item 9) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LC_ALL": "C.UTF-8", "LANG": "en_US.UTF-8"}, "en"),  # a container's C locale names no language
        ({"LC_ALL": "en_GB.UTF-8", "LANG": "ko_KR.UTF-8"}, "en"),
        ({"LANG": "ko_KR.UTF-8"}, "ko"),
        ({"LANG": "C.UTF-8"}, "ko"),
        ({}, "ko"),
    ],
)
def test_the_terminal_language_is_read_like_gettext_reads_it(env: dict[str, str], lang: str) -> None:
    assert launch.env_language(env) == lang


@pytest.fixture
def cli_env(models_root: Path, tmp_path: Path) -> dict[str, str]:
    """A models folder with a Korean name beside a plain one, and a folder whose problem is long."""
    root = tmp_path / "models"
    shutil.copytree(models_root / "tiny", root / "tiny")
    shutil.copytree(models_root / "tiny", root / "한국어-모델")
    (root / "zz-empty").mkdir()
    (root / "zz-empty" / "config.json").write_text(json.dumps({"model_type": "llama"}))  # no weights, no class
    env = server_env(root, tmp_path / "cli.sqlite3")
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        env.pop(var, None)
    migrate(env)
    return env


def test_an_english_locale_gets_an_english_first_line(cli_env: dict[str, str]) -> None:
    env = cli_env | {"LC_ALL": "C.UTF-8", "LANG": "en_US.UTF-8"}
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", "tiny", "--device", "cpu"], cwd=ROOT, env=env,
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    first = proc.stderr.readline()
    _out, rest = proc.communicate(timeout=120)
    assert first.startswith("Preparing") and not HANGUL.search(first), first
    assert proc.returncode == 0 and "Model loaded" in rest and not HANGUL.search(rest), rest


def _list_on_a_terminal(env: dict[str, str], *args: str, columns: int = 60) -> list[str]:
    """``loadmodel --list`` with its stdout on a pseudo-terminal ``columns`` wide (a person reading)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "loadmodel", "--list", *args], cwd=ROOT, env=env | {"COLUMNS": str(columns)},
        stdout=follower, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode().replace("\r\n", "\n").splitlines()


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_list_on_a_terminal_lines_up_and_wraps_problems_under_their_row(cli_env: dict[str, str], lang: str) -> None:
    lines = _list_on_a_terminal(cli_env, "--lang", lang, columns=50)
    header, rows = lines[0], [line for line in lines[1:] if not line.startswith(" ")]
    assert {row.split()[0] for row in rows} == {"tiny", "zz-empty", "한국어-모델"}, lines

    def column_of(line: str, text: str) -> int:
        return cell_width(line[: line.index(text)])

    size_end = {column_of(row, " MB") for row in rows}
    assert len(size_end) == 1, lines  # the sizes end in one column, the Korean name's two-column letters counted
    arch = column_of(header, "ARCHITECTURE" if lang == "en" else "아키텍처")
    assert {column_of(row, "LlamaForCausalLM" if not row.startswith("zz") else "—") for row in rows} == {arch}, lines
    empty = lines.index(next(row for row in rows if row.startswith("zz-empty")))
    assert "None" not in "\n".join(lines)
    below = []
    for line in lines[empty + 1 :]:
        if not line.startswith("    "):
            break
        below.append(line)
    assert below and below[0].startswith("    ⚠ "), lines
    assert all(cell_width(line) <= 50 for line in below), below
    assert (lang == "ko") == bool(HANGUL.search(" ".join(below)))


def test_list_into_a_pipe_stays_tab_separated_with_a_dash_for_unknowns(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "loadmodel", "--list"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60
    )
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert rows["zz-empty"][3] == "—" and "None" not in result.stdout


def test_problems_wrap_between_words_only() -> None:
    problem = "No weights file (.safetensors or pytorch_model.bin) in /a/rather/long/path/that/cannot/be/broken here"
    info = {
        "display_name": "x", "size_bytes": 0, "shards": 0, "architecture": None, "step": None, "adapter": None,
        "name_warning": None, "problem": problem,
    }  # fmt: skip
    lines = list_table([info], width=30)
    below = [line[6:] for line in lines[2:]]
    assert " ".join(below) == problem, "no word cut, none lost"
    assert all(cell_width(line) <= 30 or " " not in line.strip() for line in lines[2:]), lines
    assert wrap_columns("가나다 라마바 사아자", 8) == ["가나다", "라마바", "사아자"], "Hangul counts two columns"


def test_help_documents_every_option_and_the_exit_codes(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "loadmodel", "--help"], cwd=ROOT, env=cli_env | {"COLUMNS": "100"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for option in ("--device", "--dtype", "--json", "--list", "--merge", "--lang"):
        described = re.search(rf"^  {option}\b.*\n(?:\s{{20,}}.*\n)*", text, re.M)
        assert described is not None and len(described.group(0).split()) > 4, option
    codes = text.split("exit codes:")[1]
    for code, words in (("0", "loaded"), ("1", "failed"), ("2", "refused"), ("130", "cancelled")):
        assert re.search(rf"^  {code}\s+.*{words}", codes, re.M), (code, codes)
