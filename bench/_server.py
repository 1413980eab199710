"""The throwaway PostgreSQL every benchmark runs against."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import psycopg

from warehouse.store.embedded import EmbeddedPostgres


def scratch_server(name: str, binaries: Path | None = None,
                   settings: Mapping[str, str] | None = None) -> tuple[Path, EmbeddedPostgres]:
    """A fresh embedded PostgreSQL in a temporary folder that also holds the run's spools and exports
    (`binaries`: another installation's bin directory, e.g. Debian's PostgreSQL 15 for TimescaleDB;
    `settings`: postgresql.conf lines). Call `discard(workdir, server)` when done."""
    workdir = Path(tempfile.mkdtemp(prefix=f"owh-bench-{name}-"))
    os.environ["WAREHOUSE_DATA_DIR"] = str(workdir)
    server = EmbeddedPostgres(workdir / "pg", binaries, settings)
    server.ensure_running()
    return workdir, server


def discard(workdir: Path, server: EmbeddedPostgres | None) -> None:
    """Stop the run's server and delete its folder: a benchmark's frames, spools and exports run to
    hundreds of MB, which nobody wants left behind in /tmp after every run."""
    if server is not None:
        server.destroy()
    shutil.rmtree(workdir, ignore_errors=True)


def database_url(admin_url: str, name: str) -> str:
    """The same server, another database (works for TCP and Unix-socket URLs)."""
    head, _, rest = admin_url.partition("?")
    return head.rsplit("/", 1)[0] + "/" + name + (f"?{rest}" if rest else "")


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """A fresh database `name` (dropped first if it exists), copied from `template`; its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return database_url(admin_url, name)
