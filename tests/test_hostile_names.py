"""Folder names that attack whoever reads them (#19 items 12 and 13).

A name is chosen by whoever made the folder: escape sequences in it must not act on a terminal
(retitle, clear, colour, hyperlink, a fake line), and invisible, direction and look-alike
characters must not make one name pass for another in the picker, the history or the terminal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
from django.test import Client

from loader.jobs.models import LoadJob
from loader.jobs.selectors import job_snapshot
from loader.management.commands.loadmodel import list_line
from loader.pipeline.names import INVISIBLE, LOOKALIKE, name_view, terminal_json, visible_name

from .conftest import PYTHON, ROOT, migrate, server_env

TITLE = "\x1b]0;pwned\x07title"  # OSC 0: sets the window title
CLEAR = "\x1b[2Jclear"  # ED 2: clears the screen
COLOUR = "red\x1b[31mrest"  # SGR 31: everything after turns red
LINK = "\x1b]8;;x:evil\x1b\\link\x1b]8;;\x1b\\"  # OSC 8: a hyperlink
FAKE_LINE = "fake\n✅ 모델 로드 완료! forged"  # a newline that fakes an output line
BIDI = "safe-\u202e3amall"  # reads "safe-llama3"
ZERO_WIDTH = "llama\u200b3"
CYRILLIC = "ll\u0430ma3"  # Cyrillic а
TERMINAL_NAMES = (TITLE, CLEAR, COLOUR, LINK, FAKE_LINE)
LOOKALIKES = ("llama3", ZERO_WIDTH, CYRILLIC)
ACTIVE = ("\x1b", "\x07", "\r", "\x9b")  # what a terminal would act on (C1 CSI too)


@pytest.fixture
def hostile_root(models_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    for name in (*TERMINAL_NAMES, BIDI, *LOOKALIKES):
        shutil.copytree(models_root / "tied", root / name)
    return root


@pytest.fixture
def env(hostile_root: Path, tmp_path: Path) -> dict[str, str]:
    env = server_env(hostile_root, tmp_path / "names.sqlite3")
    migrate(env)
    return env


def loadmodel(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", "loadmodel", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def assert_inert(text: str) -> None:
    for seq in ACTIVE:
        assert seq not in text, (seq, text)
    assert not any(line.startswith("✅") for line in text.splitlines())  # no line forged by a name


# -- the terminal (item 12) ------------------------------------------------------------------


def test_list_escapes_every_name_and_value(env: dict[str, str]) -> None:
    result = loadmodel(env, "--list")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)
    lines = result.stdout.splitlines()
    assert len(lines) == 5 + 1 + len(LOOKALIKES)  # one line per folder: no name fakes another
    shown = {line.split("\t")[0]: line for line in lines}
    assert "⟨U+001B⟩]0;pwned⟨U+0007⟩title" in shown
    assert "fake⟨U+000A⟩✅ 모델 로드 완료! forged" in shown
    # Look-alikes are told apart, and say why.
    assert {"llama3", "llama⟨U+200B⟩3", "ll⟨U+0430⟩ma3", "safe-⟨U+202E⟩3amall"} <= set(shown)
    assert "⚠ 보이지 않는 문자나 방향 제어 문자가 든 이름" in shown["llama⟨U+200B⟩3"]
    assert "⚠ 다른 문자 체계나 비슷해 보이는 문자가 섞인 이름" in shown["ll⟨U+0430⟩ma3"]
    assert "⚠" not in shown["llama3"]


def test_list_in_english_says_the_warning_in_english(env: dict[str, str]) -> None:
    result = loadmodel(env, "--list", "--lang", "en")
    assert "⚠ name mixes scripts or look-alike characters" in result.stdout


def test_the_success_line_and_the_bars_escape_the_name(env: dict[str, str]) -> None:
    hostile = TITLE + CLEAR + "\n" + COLOUR
    shutil.move(Path(env["MACTUNER_MODELS_DIR"]) / TITLE, Path(env["MACTUNER_MODELS_DIR"]) / hostile)
    result = loadmodel(env, hostile, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    # tqdm moves its own cursor (ESC[A) between its two bars: only the folder's sequences count.
    for seq in ("\x1b]", "\x07", "\x1b[2J", "\x1b[31m", "\nclear", "\nred"):
        assert seq not in result.stderr and seq not in result.stdout, seq
    shown = "⟨U+001B⟩]0;pwned⟨U+0007⟩title⟨U+001B⟩[2Jclear⟨U+000A⟩red⟨U+001B⟩[31mrest"
    (success,) = [line for line in result.stderr.splitlines() if line.startswith("✅ 모델 로드 완료! ⟨")]
    assert success.startswith(f"✅ 모델 로드 완료! {shown} (cpu, ")
    assert json.loads(result.stdout)["model"] == hostile  # --json keeps the exact name, as JSON escapes


def test_list_values_from_a_folder_are_escaped_in_their_cell() -> None:
    """The adapter's base and a config's values come from the folder as much as its name does."""
    info = {
        "name": CLEAR, "display_name": visible_name(CLEAR), "name_warning": INVISIBLE, "size_bytes": 0, "shards": 0,
        "architecture": "Llama\x1b[2J", "step": None, "problem": None,
        "adapter": {"type": "LORA\x07", "rank": 8, "base": "base\tcolumn\x1b]8;;x:evil\x1b\\"},
    }  # fmt: skip
    line = list_line(info)
    assert_inert(line)
    assert line.split("\t") == [
        "⟨U+001B⟩[2Jclear", "0.0 MB", "0 shard(s)", "Llama\\x1b[2J",
        "⚠ 보이지 않는 문자나 방향 제어 문자가 든 이름", "LORA\\x07 r=8 base=base\\x09column\\x1b]8;;x:evil\\x1b\\",
    ]  # fmt: skip


def test_a_refusal_quoting_the_name_is_escaped(env: dict[str, str]) -> None:
    result = loadmodel(env, TITLE + "-missing", "--json")
    assert result.returncode == 2
    assert_inert(result.stderr + result.stdout)
    assert "⟨U+001B⟩]0;pwned⟨U+0007⟩title-missing" in result.stderr


def test_json_for_a_terminal_escapes_c1_and_bidi_and_stays_the_same_json() -> None:
    value = {"model": "a\x9b2Jb\u202ec\u2028d\U000e0041é한"}
    text = terminal_json(json.dumps(value, ensure_ascii=False, indent=2))
    assert all(c.isprintable() or c in "\n " for c in text)
    assert json.loads(text) == value


# -- the page and the API (item 13) ----------------------------------------------------------


@pytest.mark.django_db
def test_the_model_list_shows_hidden_and_lookalike_characters(
    client: Client, hostile_root: Path, settings: object
) -> None:
    settings.MACTUNER_MODELS_DIR = hostile_root  # type: ignore[attr-defined]
    res = client.get("/api/models")
    assert res.status_code == 200
    models = {m["name"]: m for m in res.json()["models"]}
    assert models[BIDI]["display_name"] == "safe-⟨U+202E⟩3amall" and models[BIDI]["name_warning"] == INVISIBLE
    assert models[ZERO_WIDTH]["display_name"] == "llama⟨U+200B⟩3"
    assert models[CYRILLIC]["display_name"] == "ll⟨U+0430⟩ma3" and models[CYRILLIC]["name_warning"] == LOOKALIKE
    assert models["llama3"]["display_name"] == "llama3" and models["llama3"]["name_warning"] is None
    shown = [models[name]["display_name"] for name in LOOKALIKES]
    assert len(set(shown)) == len(LOOKALIKES)  # three entries, three different texts
    for name, model in models.items():
        assert model["display_name"].isprintable(), name


def test_the_history_snapshot_shows_the_same_display_name() -> None:
    snapshot = job_snapshot(LoadJob(model_name=CYRILLIC, model_path="/x", state="succeeded"))
    assert snapshot is not None
    assert snapshot["model"] == CYRILLIC  # the key that loads is unchanged
    assert snapshot["model_display"] == "ll⟨U+0430⟩ma3" and snapshot["model_warning"] == LOOKALIKE


@pytest.mark.parametrize(
    ("name", "display", "warning"),
    [
        (BIDI, "safe-⟨U+202E⟩3amall", INVISIBLE),
        ("llama\u00a03", "llama⟨U+00A0⟩3", INVISIBLE),  # a no-break space
        ("llama\u31643", "llama⟨U+3164⟩3", INVISIBLE),  # a Hangul filler: printable, shows nothing
        ("ｌｌａｍａ3", "⟨U+FF4C⟩⟨U+FF4C⟩⟨U+FF41⟩⟨U+FF4D⟩⟨U+FF41⟩3", LOOKALIKE),  # fullwidth
        ("мо\u0064ель", "мо⟨U+0064⟩ель", LOOKALIKE),  # a Latin d in a Cyrillic word
        ("аре", "аре", LOOKALIKE),  # wholly Cyrillic, passes for Latin "ape": said, not rewritten
        ("llama⟨U+200B⟩3", "llama⟨U+27E8⟩U+200B⟩3", None),  # a name that spells an escape is not one
    ],
)
def test_visible_name(name: str, display: str, warning: str | None) -> None:
    assert name_view(name) == (display, warning)


@pytest.mark.parametrize(
    "name",
    [
        "llama3",
        "Qwen2.5-7B-Instruct",
        "run/checkpoint-500",
        "모델-한국어",
        "llama-модель",
        "GPT한국어",
        "café",
        "日本語モデル",
    ],
)
def test_ordinary_names_are_left_alone(name: str) -> None:
    assert name_view(name) == (name, None)
    decomposed = unicodedata.normalize("NFD", name)  # how macOS's Finder often spells Korean
    assert visible_name(decomposed) == decomposed
