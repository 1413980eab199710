"""DuckDB with the warehouse attached read-only: what the export reads PostgreSQL through and the query
surface reads the hot days through. Extensions come from wheels only: nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

ATTACHED = "pg"  # the catalog name PostgreSQL is attached as in DuckDB


class ExtensionMissing(RuntimeError):
    """DuckDB's postgres extension for the installed DuckDB is not installed; the message says how to."""


def duckdb_connection(url: str) -> duckdb.DuckDBPyConnection:
    """DuckDB (UTC) with PostgreSQL attached read-only as `pg`, through the wheel-shipped postgres
    extension."""
    import duckdb
    import duckdb_extension_postgres_scanner as extension

    version = duckdb.__version__
    library = Path(extension.__file__).parent / "extensions" / f"v{version}" / "postgres_scanner.duckdb_extension"
    if not library.exists():
        raise ExtensionMissing(f"no postgres extension for DuckDB {version} at {library}; "
                               f"install duckdb-extension-postgres-scanner=={version}")
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"LOAD '{library}'")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # callers show their own progress, on a terminal only
    dsn = _libpq_dsn(url).replace("'", "''")  # ATTACH takes no bound parameters: an escaped literal
    con.execute(f"ATTACH '{dsn}' AS {ATTACHED} (TYPE postgres, READ_ONLY)")
    return con


def _libpq_dsn(url: str) -> str:
    """DuckDB takes libpq URLs as they are; only our driver-style prefix needs removing."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
