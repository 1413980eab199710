"""Which database to use, and how each driver wants its URL.

Selection order (README, Configuration): `--database-url`, else WAREHOUSE_DATABASE_URL, else the
config file's `[database] url`, else the embedded PostgreSQL in the data directory (started on demand).
Also the one generic read helper, `scalar`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from warehouse.store.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine

ENV_URL = "WAREHOUSE_DATABASE_URL"
ENV_DATA_DIR = "WAREHOUSE_DATA_DIR"
DEMO_DATABASE = "demo"  # `warehouse demo` writes here, on the embedded server: never into a warehouse

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def data_dir() -> Path:
    """Where the embedded server, the spool and default exports live (per user)."""
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return Path(configured).expanduser().resolve()
    return platformdirs.user_data_path("odds-warehouse")


def embedded_server() -> EmbeddedPostgres:
    return EmbeddedPostgres(data_dir() / "postgres")


def demo_database(fresh: bool = False) -> str:
    """The URL of the demo's own database on the embedded server (started if needed). `fresh`: made
    again, empty (each demo starts over: a previous demo's fixtures would be resynced into 404s by
    the new run's simulators); else it must exist."""
    import psycopg

    server = embedded_server()
    if not fresh and not server.is_initialised():  # nothing to find: no server started for nothing
        raise ValueError(f"no demo database yet (no embedded PostgreSQL in {server.data_dir}): run `warehouse demo`"
                         " first")
    server.ensure_running()
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)).fetchone()
        if not fresh and not exists:
            raise ValueError(f"no demo database yet in the embedded PostgreSQL in {server.data_dir}:"
                             " run `warehouse demo` first")
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{DEMO_DATABASE}" WITH (FORCE)')  # its sessions too
            conn.execute(f'CREATE DATABASE "{DEMO_DATABASE}"')
    return server.url(DEMO_DATABASE)


def configured_database_url(cli_url: str | None = None, config_url: str | None = None) -> str | None:
    """The external database the user asked for, or None for the embedded one."""
    for url in (cli_url, os.environ.get(ENV_URL), config_url):
        if url and url.strip():
            return normalise_url(url.strip())
    return None


def resolve_database_url(cli_url: str | None = None, config_url: str | None = None) -> str:
    """The URL of the database in use, starting the embedded server if that is the one."""
    return configured_database_url(cli_url, config_url) or embedded_server().ensure_running()


def normalise_url(url: str) -> str:
    """Accept libpq URLs and SQLAlchemy-style `postgresql+driver://` ones; return a libpq URL."""
    match = _SCHEME.match(url)
    if not match:
        raise ValueError(
            f"database URL must start with postgresql:// (got {redact_url(url)!r}); "
            "example: postgresql://user@host:5432/odds"
        )
    return "postgresql://" + url[match.end():]


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy URL using the psycopg (v3) driver, for migrations and reporting queries."""
    return "postgresql+psycopg://" + normalise_url(url).removeprefix("postgresql://")


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@?]+):[^@/?]*@", r"\1:***@", url)


def sqlalchemy_engine(url: str | None = None, config: str | Path | None = None) -> Engine:
    """A SQLAlchemy engine on the database every `warehouse` command uses: `url`, else
    $WAREHOUSE_DATABASE_URL, else `[database] url` of `config`, else the embedded server (started
    if needed). The tables are warehouse.schema's SQLAlchemy Core metadata."""
    from sqlalchemy import create_engine

    from warehouse.config import load_config

    return create_engine(sqlalchemy_url(resolve_database_url(url, load_config(config).database_url)))


def scalar(conn: psycopg.Connection[Any], sql: str, params: Sequence[object] | None = None) -> Any:
    """The first column of the one row `sql` returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]
