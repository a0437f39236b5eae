"""With a database, actors' secrets live in PostgreSQL and the database password never
goes into actor arguments (docs/scaling.md). A real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from batches.settings import Settings, split_password, with_password


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:s3cr%40t@db.example:5433/batchlog?sslmode=require",
        "host=db.example port=5433 user=bob password=s3cr@t dbname=batchlog",
    ],
)
def test_actor_arguments_carry_the_database_url_without_its_password(url: str) -> None:
    args = Settings(database_url=url).actor_args()
    assert "s3cr" not in repr(args)
    assert psycopg.conninfo.conninfo_to_dict(args["database_url"]) == {
        "host": "db.example",
        "port": "5433",
        "user": "bob",
        "dbname": "batchlog",
        **({"sslmode": "require"} if "sslmode" in url else {}),
    }
    bare, password = split_password(url)
    assert password == "s3cr@t"
    assert psycopg.conninfo.conninfo_to_dict(with_password(bare, password))["password"] == password


def test_a_url_without_password_passes_unchanged() -> None:
    url = "postgresql://bob@db/batchlog"
    assert split_password(url) == (url, None)
    assert Settings(database_url=url).actor_args()["database_url"] == url


def test_secrets_go_to_postgres_not_to_a_file(pg_database: str, tmp_path: Path) -> None:
    (tmp_path / "secrets.json").write_text('{"upstream_api_key": "stale"}')
    settings = Settings(
        data_dir=tmp_path, database_url=pg_database, upstream_api_key="up-key", webhook_secret="w1"
    )
    other_node = Settings(data_dir=tmp_path / "elsewhere", database_url=pg_database)
    assert other_node.read_secret("upstream_api_key") is None  # nothing written yet
    settings.write_secrets()
    assert not (tmp_path / "secrets.json").exists()  # the stale local copy is gone
    assert other_node.read_secret("upstream_api_key") == "up-key"
    assert other_node.read_secret("webhook_secret") == "w1"
    assert other_node.read_secret("tenant_webhooks") == {}
    # A serve started without a key (another run) removes it; nothing stale remains.
    Settings(data_dir=tmp_path, database_url=pg_database).write_secrets()
    assert other_node.read_secret("upstream_api_key") is None
