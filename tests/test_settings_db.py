"""DATABASE_URL accepts PostgreSQL and SQLite URLs; anything else stops start-up with a reason."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from mactuner_site.settings import database_from_url


def test_sqlite_url_keeps_wal_and_immediate_transactions(tmp_path: object) -> None:
    config = database_from_url("sqlite:////var/lib/mactuner/jobs.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == "/var/lib/mactuner/jobs.sqlite3"
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE" and "WAL" in config["OPTIONS"]["init_command"]


def test_postgres_url_is_parsed_with_credentials() -> None:
    config = database_from_url("postgres://me:p%40ss@db.local:6543/mactuner")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "mactuner", "me", "p@ss", "db.local", 6543,
    )  # fmt: skip


@pytest.mark.parametrize("url", ["mysql://x@y/z", "redis://127.0.0.1:6379/0", "nonsense"])
def test_unsupported_database_urls_are_refused_with_a_reason(url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        database_from_url(url)
