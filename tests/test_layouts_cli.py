"""``python -m mactuner_dev``: every layout a user keeps, made from the command line (no Python to
write), is listed by the dashboard as what it is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from .conftest import PYTHON, ROOT

pytestmark = pytest.mark.django_db


def make(*args: str) -> str:
    run = subprocess.run([PYTHON, "-m", "mactuner_dev", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_every_layout_is_made_from_the_command_line_and_listed(
    client: Client, models_root: Path, tmp_path: Path, settings: Any
) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_root / "tied", models / "tied")
    make("trainer-run", str(models / "run"), "--steps", "10", "20", "--params", "1000000")
    make("hf-cache", str(tmp_path / "hub"), "--repo", "acme/tied", "--source", str(models / "tied"))
    make("gguf", str(models / "q4" / "model.gguf"))
    settings.MACTUNER_MODELS_DIR, settings.MACTUNER_HF_CACHE = models, tmp_path / "hub"
    listed = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert listed["run/checkpoint-20"]["kind"] == "checkpoint" and listed["run/checkpoint-20"]["step"] == 20
    assert listed["acme/tied"]["source"] == "hf-cache" and listed["acme/tied"]["problem"] is None
    assert (
        "GGUF" in listed["q4"]["problem"]
    )  # (lora, bin and mlx import torch for seconds each: made in Python by test_finetune, test_formats)
    usage = subprocess.run([PYTHON, "-m", "mactuner_dev", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert usage.returncode == 0 and "trainer-run" in usage.stdout and "hf-cache" in usage.stdout
