"""Every message a user can read exists in English too, and errors reach each viewer in its language."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import translation

from loader.jobs.i18n import both
from loader.jobs.local import MODEL_HOST

from .conftest import ROOT, wait_finished

HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _unquote(lines: list[str]) -> str:
    return "".join(ast.literal_eval(line) for line in lines)


def _msgids(pot: str) -> list[str]:
    """msgids of a .pot text (msgid "…" and its continuation lines)."""
    ids, current, inside = [], [], False
    for raw in pot.splitlines():
        line = raw.strip()
        if line.startswith("msgid "):
            current, inside = [line[6:]], True
        elif inside and line.startswith('"'):
            current.append(line)
        elif inside:
            ids.append(_unquote(current))
            inside = False
    return [i for i in ids if i]


def test_every_marked_message_in_the_code_has_an_english_translation() -> None:
    if shutil.which("xgettext") is None:
        pytest.skip("xgettext (gettext) is not installed")
    files = sorted(str(p) for p in (ROOT / "loader").rglob("*.py") if "migrations" not in p.parts)
    out = subprocess.run(
        ["xgettext", "--language=Python", "--from-code=UTF-8", "--keyword=gettext_noop", "--keyword=gettext",
         "--keyword=gettext_lazy", "--keyword=_", "-o", "-", *files],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    korean = [m for m in _msgids(out) if HANGUL.search(m)]
    assert len(korean) > 20
    untranslated = []
    with translation.override("en"):
        for msgid in korean:
            english = translation.gettext(msgid)
            if HANGUL.search(english):
                untranslated.append(msgid)
    assert not untranslated, f"{len(untranslated)} messages have no English: {untranslated[:5]}"


# Korean text the pipeline keeps in both languages itself (the stage table), not through the catalog.
BILINGUAL_TABLES = {"loader/pipeline/events.py"}


def _korean_literals(path: Path) -> list[tuple[int, str]]:
    """Korean string literals in code (docstrings aside); an f-string counts as one unmarked literal."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    found = []
    for node in ast.walk(tree):
        own_text = [v.value for v in getattr(node, "values", []) if isinstance(v, ast.Constant)]
        if isinstance(node, ast.JoinedStr) and HANGUL.search("".join(map(str, own_text))):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [(node.lineno, node.value)] if HANGUL.search(node.value) else []
    return found


def test_no_korean_text_reaches_users_without_a_translation() -> None:
    """Every Korean literal in the app is a marked template (so it has English), never an f-string."""
    with translation.override("en"):
        bad = [
            f"{path.relative_to(ROOT)}:{line}: {text[:60]}"
            for path in sorted((ROOT / "loader").rglob("*.py"))
            if "migrations" not in path.parts and str(path.relative_to(ROOT)) not in BILINGUAL_TABLES
            for line, text in _korean_literals(path)
            if text.startswith("f") or HANGUL.search(translation.gettext(text))
        ]
    assert not bad, f"{len(bad)} Korean texts without English:\n" + "\n".join(bad[:40])


@pytest.mark.django_db(transaction=True)
def test_an_error_reaches_an_english_page_in_english_and_a_korean_one_in_korean(client: Client, broken: Path) -> None:
    MODEL_HOST.unload()
    (broken / "model-00002-of-00003.safetensors").unlink()
    from django.conf import settings

    settings.MACTUNER_MODELS_DIR = broken.parent
    res = client.post("/api/load", data=json.dumps({"model": "broken"}), content_type="application/json")
    assert res.status_code == 202
    job = wait_finished(res.json()["job"]["id"])
    assert job.state == "failed"
    error: dict[str, Any] = client.get("/api/status").json()["job"]["error"]
    assert HANGUL.search(error["text"]["ko"]) and not HANGUL.search(error["text"]["en"]), error
    assert "broken" in error["text"]["en"] or "00002" in error["text"]["en"], error


@pytest.mark.django_db
def test_api_refusals_answer_in_the_requests_language(client: Client) -> None:
    body = json.dumps({"model": "no-such-model"})
    en = client.post("/api/load", data=body, content_type="application/json", HTTP_ACCEPT_LANGUAGE="en")
    ko = client.post("/api/load", data=body, content_type="application/json", HTTP_ACCEPT_LANGUAGE="ko")
    assert en.status_code == ko.status_code == 400
    assert not HANGUL.search(en.json()["error"]) and "no-such-model" in en.json()["error"]
    assert HANGUL.search(ko.json()["error"])


def test_a_template_with_parameters_is_said_in_both_languages() -> None:
    said = both("모델 목록에 없는 이름입니다: {name}", {"name": "'x'"})
    assert said == {"ko": "모델 목록에 없는 이름입니다: 'x'", "en": "Not a name from the model list: 'x'"}


@pytest.mark.django_db
def test_a_model_lists_problem_is_said_in_the_requests_language(client: Client, settings: Any, tmp_path: Path) -> None:
    gguf = tmp_path / "models" / "llama-q4"
    gguf.mkdir(parents=True)
    (gguf / "model.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    settings.MACTUNER_MODELS_DIR = tmp_path / "models"
    for lang, korean in (("en", False), ("ko", True)):
        models = client.get("/api/models", HTTP_ACCEPT_LANGUAGE=lang).json()["models"]
        problem = next(m for m in models if m["name"] == "llama-q4")["problem"]
        assert "GGUF" in problem and bool(HANGUL.search(problem)) is korean, problem


@pytest.mark.django_db
def test_the_page_switches_language_and_remembers_it(client: Client) -> None:
    assert 'lang="ko"' in client.get("/").content.decode()
    res = client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    assert res.status_code == 302
    page = client.get("/").content.decode()
    assert 'lang="en"' in page and "Load model" in page


@pytest.mark.django_db
def test_the_english_cards_labels_are_capitalised_like_each_other(client: Client) -> None:
    """The loaded model's card: "Adapter" like "Architecture", not "adapter" (the CLI's --list
    header upper-cases the same msgid, so it reads ADAPTER either way)."""
    html = client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    labels = json.loads(html.split('<script id="i18n" type="application/json">')[1].split("</script>")[0])["meta"]
    assert labels["adapter"] == "Adapter"
    lower = [text for key, text in labels.items() if key != "dtype" and not text[:1].isupper()]
    assert not lower, lower
