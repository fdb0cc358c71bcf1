"""The committed screenshots, the README's table of them and the script that takes them agree.

A state added to ``scripts/screenshots.py`` without a README row (or a row for a state the script
no longer takes), a link to a picture that is not there, or a stale picture left behind after a
rename: each fails here, without a browser or a server.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from itertools import product
from types import ModuleType

from mactuner_dev.harness import ROOT

SHOTS = ROOT / "docs" / "screenshots"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshots_script", ROOT / "scripts" / "screenshots.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Screenshots\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_table_names_every_state_the_script_takes_in_its_order() -> None:
    rows = re.findall(r"^\| `([a-z-]+)` \|", readme_section(), flags=re.MULTILINE)
    assert tuple(rows) == script().STATES


def test_every_linked_picture_exists_and_every_picture_is_one_the_script_takes() -> None:
    shots = script()
    expected = {f"{s}-{lang}-{size}.png" for s, lang, size in product(shots.STATES, shots.LANGS, shots.SIZES)}
    linked = set(re.findall(r"docs/screenshots/([\w.-]+\.png)", readme_section()))
    assert linked <= expected
    assert {p.name for p in SHOTS.iterdir()} == expected
