"""A training run writes a checkpoint while a page is open: the server says so over the websocket
(every snapshot carries the model folders' version) and the list marks each run's newest step."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mactuner_dev import layouts

from .conftest import Api, LiveServer, SocketWatcher, migrate, server_env


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    root = tmp_path / "models"
    layouts.write_trainer_run(root / "run", steps=(500, 1000), params=200_000)
    env = server_env(root, tmp_path / "db.sqlite3", MACTUNER_WARM_IMPORTS="0")  # no load here: no host
    migrate(env)
    server = LiveServer(env).start()
    yield server, root
    server.stop()


def version(msg: dict[str, Any]) -> str:
    return str((msg.get("catalog") or {}).get("version") or "")


def test_a_new_checkpoint_is_pushed_to_open_pages_and_marked_newest_in_its_run(live: tuple[LiveServer, Path]) -> None:
    server, root = live
    api = Api(server)
    models = {m["name"]: m for m in api.call("GET", "/api/models")[1]["models"]}  # type: ignore[union-attr]
    assert models["run/checkpoint-1000"]["newest"] and not models["run/checkpoint-500"]["newest"]
    watcher = SocketWatcher(server)
    try:
        first = watcher.until(lambda msg: bool(version(msg)), timeout=30)  # the watcher's first look
        layouts.write_trainer_run(root / "run", steps=(1500,), params=200_000)
        # No load runs, nothing else changes: only the folders' new version can send this.
        pushed = watcher.until(lambda msg: version(msg) not in ("", version(first)), timeout=30)
    finally:
        watcher.close()
    assert pushed["type"] == "snapshot" and pushed["job"] is None
    models = {m["name"]: m for m in api.call("GET", "/api/models")[1]["models"]}  # type: ignore[union-attr]
    assert models["run/checkpoint-1500"]["newest"] and models["run/checkpoint-1500"]["step"] == 1500
    assert not models["run/checkpoint-1000"]["newest"] and not models["run/checkpoint-500"]["newest"]
    assert api.status()["catalog"] == {"version": version(pushed)}, "the status says the same version"
    shutil.rmtree(root / "run" / "checkpoint-1500")


def test_a_long_runs_newest_checkpoint_is_watched_as_its_files_arrive(tmp_path: Path, settings: Any) -> None:
    """A run with more checkpoints than the fingerprint follows (500): the newest is among those
    followed, so its weights written after its config change the version (the page re-reads)."""
    import os

    from loader.catalog.changes import catalog_check, catalog_version

    settings.MACTUNER_MODELS_DIR = tmp_path
    settings.MACTUNER_HF_CACHE = tmp_path / ".no-hf-cache"
    run = tmp_path / "run"
    for n in range(1, 601):
        (run / f"checkpoint-{n}").mkdir(parents=True)
        os.utime(run / f"checkpoint-{n}", (n, n))  # older first: checkpoint-600 is the newest
    newest = run / "checkpoint-600"  # by name, after the first 500 ("checkpoint-1", "-10", "-100", …)
    (newest / "config.json").write_text("{}")
    catalog_check()
    before = catalog_version()
    assert not catalog_check(), "nothing changed, nothing to push"
    (newest / "model.safetensors").write_bytes(b"\0" * 8)  # the weights, after the config
    assert catalog_check() and catalog_version() != before
