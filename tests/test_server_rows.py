"""What this server holds is written where every process reads it, even after its row expired."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.jobs import servers
from loader.jobs.local import IDENTITY
from loader.jobs.models import ServerProcess

pytestmark = pytest.mark.django_db


def test_a_success_recreates_our_server_row_if_it_was_expired_meanwhile(models_root: Path) -> None:
    """A paused server's row may be expired by another; its next success must still say what it holds."""
    loaded = {"name": "tiny", "path": str(models_root / "tiny"), "device": "cpu", "dtype": "bfloat16", "metadata": {}}
    servers.process_record_loaded(model=loaded)  # no row yet: created, then written
    row = ServerProcess.objects.get(host=IDENTITY.host, pid=IDENTITY.pid)
    assert row.model_name == "tiny" and row.loaded_at is not None
    servers.process_record_unloaded()
    servers.process_record_loaded(model=loaded)  # our row is there: one update
    assert ServerProcess.objects.get(pk=row.pk).model_name == "tiny"
    ServerProcess.objects.filter(pk=row.pk).delete()  # expired by another process
    servers.process_record_loaded(model=loaded)
    again = ServerProcess.objects.get(host=IDENTITY.host, pid=IDENTITY.pid)
    assert again.model_name == "tiny" and again.channel == IDENTITY.channel
