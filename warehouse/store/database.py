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

from warehouse.redact import Redactor
from warehouse.store.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Engine

ENV_URL = "WAREHOUSE_DATABASE_URL"
ENV_DATA_DIR = "WAREHOUSE_DATA_DIR"

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def data_dir() -> Path:
    """Where the embedded server, the spool and default exports live (per user)."""
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return Path(configured).expanduser().resolve()
    return platformdirs.user_data_path("odds-warehouse")


def embedded_server() -> EmbeddedPostgres:
    return EmbeddedPostgres(data_dir() / "postgres")


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
    """The URL with any password replaced (user:password@, or ?password=), for messages and logs."""
    return Redactor([]).text(re.sub(r"(://[^:/@?]+):[^@/?]*@", r"\1:***@", url))


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
