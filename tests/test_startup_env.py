"""TOKENIZERS_PARALLELISM=false is set at start-up, unless the user chose a value."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import PYTHON, ROOT


@pytest.mark.parametrize(("preset", "expected"), [(None, "false"), ("true", "true")])
def test_tokenizers_parallelism_default_respects_the_user(preset: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    if preset is not None:
        env["TOKENIZERS_PARALLELISM"] = preset
    for code in ("import mactuner_site.asgi", "import loader.pipeline"):
        out = subprocess.run(
            [PYTHON, "-c", f"{code}; import os; print(os.environ['TOKENIZERS_PARALLELISM'])"],
            cwd=ROOT, env=env | {"MACTUNER_WARM_IMPORTS": "0"}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip().splitlines()[-1] == expected, code
