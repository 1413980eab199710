"""DuckDB with the warehouse attached read-only: what the export reads PostgreSQL through and the query
surface reads the hot days through. Extensions come from wheels only: nothing is ever downloaded.

`lock_down` closes such a connection to everything but reading: files outside the directories it is
given, other databases, extensions and settings (docs/reliability.md, "The query surface").
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from warehouse.store.database import normalise_url

if TYPE_CHECKING:
    import duckdb

ATTACHED = "pg"  # the catalog name PostgreSQL is attached as in DuckDB

# Functions of the postgres extension, filled when it is first loaded: postgres_execute runs any SQL
# in the attached database (a COMMIT inside it leaves the READ ONLY transaction), postgres_query,
# postgres_scan and postgres_attach reach past the warehouse's views. The query surface refuses them.
POSTGRES_FUNCTIONS: set[str] = set()

# Every DuckDB connection of this process that may be running a query, for `interrupt_all`.
_OPEN: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()


class ExtensionMissing(RuntimeError):
    """DuckDB's postgres extension for the installed DuckDB is not installed; the message says how to."""


def duckdb_connection(url: str, application_name: str | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB (UTC) with PostgreSQL attached read-only as `pg`, through the wheel-shipped postgres
    extension. Its sessions show in pg_stat_activity as `application_name` (unless the URL names one)."""
    import duckdb
    import duckdb_extension_postgres_scanner as extension

    version = duckdb.__version__
    library = Path(extension.__file__).parent / "extensions" / f"v{version}" / "postgres_scanner.duckdb_extension"
    if not library.exists():
        raise ExtensionMissing(f"no postgres extension for DuckDB {version} at {library}; "
                               f"install duckdb-extension-postgres-scanner=={version}")
    con = connection()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    before = _function_names(con) if not POSTGRES_FUNCTIONS else set()
    con.execute(f"LOAD '{library}'")
    if not POSTGRES_FUNCTIONS:
        POSTGRES_FUNCTIONS.update(_function_names(con) - before)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # callers show their own progress, on a terminal only
    dsn = libpq_dsn(url, application_name).replace("'", "''")  # ATTACH takes no bound parameters: an escaped literal
    con.execute(f"ATTACH '{dsn}' AS {ATTACHED} (TYPE postgres, READ_ONLY)")
    return con


def connection() -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection that `interrupt_all` reaches."""
    import duckdb

    con = duckdb.connect()
    _OPEN.add(con)
    return con


def interrupt_all() -> None:
    """Stop every query running on this process's connections (Ctrl-C): each raises InterruptException.
    DuckDB sees a Ctrl-C by itself only between its tasks, which may take minutes."""
    for con in list(_OPEN):
        con.interrupt()


def lock_down(con: duckdb.DuckDBPyConnection, readable: Iterable[Path | str]) -> None:
    """From now on `con` reads files only under the `readable` directories or URL prefixes (DuckDB
    resolves links before it compares: give where they lead), attaches, installs and loads nothing,
    and no setting can change (not even these). What it attached stays attached."""
    folders = sorted({(folder if isinstance(folder, str) else os.path.abspath(folder.expanduser())).rstrip("/") + "/"
                      for folder in readable})
    listed = ", ".join("'" + folder.replace("'", "''") + "'" for folder in folders)
    con.execute(f"SET allowed_directories = [{listed}]::VARCHAR[]")  # SET takes no bound parameters
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def libpq_dsn(url: str, application_name: str | None = None) -> str:
    """The URL as libpq takes it (normalise_url: any form a user may give, a driver-style prefix too),
    with `application_name` added unless the URL names one."""
    dsn = normalise_url(url)
    if application_name is None:
        return dsn
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    if "application_name" in conninfo_to_dict(dsn):
        return dsn
    return make_conninfo(dsn, application_name=application_name)


def _function_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in con.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
