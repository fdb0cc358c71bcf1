"""``POST /api/load``'s lookup finds exactly what the list offers, without listing the folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loader.catalog import listing as catalog


def model(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))


@pytest.fixture
def layout(tmp_path: Path, settings: Any) -> Path:
    root = tmp_path / "models"
    model(root / "plain")
    model(root / "org" / "name")
    model(root / "org" / ".hidden")
    model(root / "run")  # a model with Trainer checkpoints beside its own weights
    model(root / "run" / "checkpoint-10")
    model(root / "run" / "other")  # inside a model, only checkpoint-N folders are listed
    model(root / "trainer" / "checkpoint-5")
    model(root / ".hidden")
    model(root / "deep" / "a" / "b")
    (root / "empty").mkdir()
    (root / "lone.gguf").write_bytes(b"GGUF")
    (root / "notes.txt").write_text("x")
    model(tmp_path / "outside")
    (root / "escape").symlink_to(tmp_path / "outside")
    (root / "org" / "escape").symlink_to(tmp_path / "outside")
    settings.MACTUNER_MODELS_DIR = root
    settings.MACTUNER_HF_CACHE = tmp_path / "no-hf-cache"
    return root


def test_every_listed_model_is_found_as_listed(layout: Path) -> None:
    listed = catalog.list_models()
    assert {e.name for e in listed} == {
        "plain",
        "org/name",
        "run",
        "run/checkpoint-10",
        "trainer/checkpoint-5",
        "lone.gguf",
        "deep",  # listed with why it is not offered: no config.json here or one level down
        "empty",
    }
    assert {e.name for e in listed if e.problem} == {"deep", "empty"}
    for entry in listed:
        assert catalog.find_model(entry.name) == entry


@pytest.mark.parametrize(
    "name",
    ["", "/", "org", "org/", "/plain", "plain/", "Plain", "..", "../plain", "org/name/x", ".hidden", "org/.hidden",
     "run/other", "escape", "org/escape", "notes.txt", "deep/a", "deep/a/b", "a\x00b", "x" * 5000,
     "plain/../plain", "./plain", "org//name"],
)  # fmt: skip
def test_names_the_list_does_not_offer_are_not_found(layout: Path, name: str) -> None:
    assert name not in {e.name for e in catalog.list_models()}
    assert catalog.find_model(name) is None
