"""Real, tiny checkpoints generated once per session; nothing is downloaded or mocked."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mactuner_dev.harness import (  # noqa: F401 - re-exported for the tests
    POSTGRES_URL,
    PYTHON,
    REDIS_URL,
    ROOT,
    Api,
    LiveServer,
    SocketWatcher,
    db_rows,
    free_port,
    job_of,
    migrate,
    port_open,
    server_env,
    wait_port,
)
from mactuner_dev.synth import write_checkpoint


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_checkpoint(root / "tiny", params=4_000_000, shards=3, seed=1)
    write_checkpoint(root / "tied", params=3_000_000, shards=1, tied=True, seed=2)
    write_checkpoint(root / "medium", params=60_000_000, shards=4, seed=3)
    return root


@pytest.fixture(autouse=True)
def _models_dir(settings: pytest.FixtureRequest, models_root: Path) -> None:
    settings.MACTUNER_MODELS_DIR = models_root  # type: ignore[attr-defined]
    settings.MACTUNER_HF_CACHE = models_root / ".no-hf-cache"  # type: ignore[attr-defined]


@pytest.fixture
def broken(models_root: Path, tmp_path: Path) -> Iterator[Path]:
    """A writable copy of ``tiny`` for a test to damage."""
    path = tmp_path / "broken"
    shutil.copytree(models_root / "tiny", path)
    yield path
    for p in [path, *path.rglob("*")]:
        with contextlib.suppress(OSError):
            p.chmod(0o755)


@pytest.fixture
def live_server_factory(models_root: Path, tmp_path: Path) -> Iterator[object]:
    """Start daphne processes sharing one fresh database; all are stopped after the test."""
    servers: list[LiveServer] = []
    db = tmp_path / "live.sqlite3"

    def make(**extra: str) -> LiveServer:
        env = server_env(models_root, db, **extra)
        if not servers:
            migrate(env)
        server = LiveServer(env).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


def require_service(name: str, port: int) -> None:
    """Skip off CI when a service is absent; under CI=true a missing service is a failure."""
    if port_open(port):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is not reachable on 127.0.0.1:{port} (CI must start it: scripts/services.sh)")
    pytest.skip(f"{name} is not running on 127.0.0.1:{port}")


def wait_finished(job_id: int, timeout: float = 60) -> Any:
    """Wait for an in-process (Django test client) job's thread to end; returns the LoadJob."""
    from loader.jobs.local import TOKENS
    from loader.jobs.models import LoadJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = LoadJob.objects.get(pk=job_id)
        if not job.is_active and job.pk not in TOKENS.running():
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still active")


def load_in_process(
    path: Path, *, name: str = "", device: str = "cpu", dtype: str = "auto", merge: bool = False
) -> Any:
    """The pipeline itself, in this process (the web path runs it in the model host): for tests that
    compare the loaded tensors with plain transformers/peft."""
    import threading

    from loader.catalog.listing import resolve_base
    from loader.pipeline import LoadRequest, ModelSlot

    request = LoadRequest(path, device, dtype, name=name or path.name, merge=merge, base_resolver=resolve_base)
    return ModelSlot().load(request, lambda event: None, threading.Event())


@pytest.fixture
def test_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Swap this process's model host for one of ``tests/hosts`` (a real host with a fault, or a
    hostile one); the real one is back afterwards. ``release`` is the file the blocking host waits for."""
    from loader.host.supervisor import HOST_ARGV
    from loader.jobs.local import MODEL_HOST

    release = tmp_path / "release"
    monkeypatch.setenv("MACTUNER_TEST_RELEASE", str(release))

    def use(name: str) -> Path:
        MODEL_HOST.argv = (PYTHON, str(ROOT / "tests" / "hosts" / f"{name}.py"))
        MODEL_HOST.recycle("test host")
        return release

    yield use
    release.touch()
    MODEL_HOST.argv = HOST_ARGV
    MODEL_HOST.recycle("test host done")
