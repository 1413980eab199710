"""PostgreSQL → Parquet, one table-day at a time, with DuckDB's postgres extension (no network).

Layout: `<export dir>/<table>/day=YYYY-MM-DD/part-0.parquet` (hive partitions), zstd, rows sorted
so that one fixture/market's history is contiguous. Each table-day is written to a temporary
folder, its row count checked against PostgreSQL, then renamed into place (replacing an earlier
export of that day atomically), and recorded in `export_runs` with its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import Numeric
from sqlalchemy.dialects.postgresql import JSONB

from warehouse import schema
from warehouse.lake import EXPORT_TABLES, PARQUET_DECIMAL
from warehouse.store.reads import scalar


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class Exported:
    table: str
    day: date
    rows: int
    path: Path


def duckdb_connection(url: str):
    """DuckDB with the wheel-shipped postgres extension, never downloading anything."""
    import duckdb
    import duckdb_extension_postgres_scanner as extension

    version = duckdb.__version__
    library = Path(extension.__file__).parent / "extensions" / f"v{version}" / "postgres_scanner.duckdb_extension"
    if not library.exists():
        raise ExportError(f"no postgres extension for DuckDB {version} at {library}; "
                          f"install duckdb-extension-postgres-scanner=={version}")
    con = duckdb.connect()
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"LOAD '{library}'")
    con.execute("SET TimeZone = 'UTC'")
    dsn = _libpq_dsn(url).replace("'", "''")  # ATTACH takes no bound parameters: an escaped literal
    con.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres, READ_ONLY)")
    return con


def _libpq_dsn(url: str) -> str:
    """DuckDB takes libpq URLs as they are; only our driver-style prefix needs removing."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# Rows can still arrive for a past day: a spool replayed after an outage carries the received_at
# of when the frames came in. An exported day this recent is exported again if its count changed.
LATE_ROWS_DAYS = 7


def pending(url: str, table_names: tuple[str, ...], since: date | None = None,
            until: date | None = None, redo: bool = False, today_too: bool = False) -> list[tuple[str, date]]:
    """Complete UTC days (before today; today as well with `today_too`) with data, not exported yet
    (or exported with fewer rows than PostgreSQL now has for a recent day), everything with `redo`."""
    today = datetime.now(UTC).date()
    newest = today if today_too else today - timedelta(days=1)
    last = min(until or newest, newest)
    recent = today - timedelta(days=LATE_ROWS_DAYS)
    work = []
    with psycopg.connect(url, autocommit=True) as conn:
        exported = {} if redo else {(table, day): rows for table, day, rows in conn.execute(
            "SELECT DISTINCT ON (table_name, day) table_name, day, rows FROM export_runs"
            " ORDER BY table_name, day, finished_at DESC").fetchall()}
        for table in table_names:
            first = scalar(conn, f"SELECT min(received_at) FROM {table}")
            if first is None:
                continue
            counts: dict[date, int] = dict(conn.execute(
                f"SELECT (received_at AT TIME ZONE 'UTC')::date, count(*) FROM {table}"
                " WHERE received_at >= %s GROUP BY 1", (_bounds(recent)[0],)).fetchall())
            day = max(first.astimezone(UTC).date(), since or date.min)
            while day <= last:
                done = exported.get((table, day))
                if done is None or (day >= recent and counts.get(day, 0) != done):
                    work.append((table, day))
                day += timedelta(days=1)
    return work


def export_all(url: str, export_root: Path, work: list[tuple[str, date]],
               step: Callable[[str, date], None] = lambda table, day: None) -> int:
    """Export every (table, day) of `work` on one DuckDB connection; `step` is called before each.
    Returns the rows written."""
    if not work:
        return 0
    rows = 0
    con = duckdb_connection(url)
    try:
        for table, day in work:
            step(table, day)
            rows += export_day(url, export_root, table, day, con).rows
    finally:
        con.close()
    return rows


def export_day(url: str, export_root: Path, table: str, day: date, con=None) -> Exported:
    if table not in EXPORT_TABLES:
        raise ExportError(f"{table!r} is not an exported table; choose from {', '.join(EXPORT_TABLES)}")
    started = datetime.now(UTC)
    final = export_root / table / f"day={day.isoformat()}"
    temporary = export_root / table / f".day={day.isoformat()}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    own = con is None
    con = con or duckdb_connection(url)
    try:
        part = temporary / "part-0.parquet"
        with psycopg.connect(url, autocommit=True) as conn:
            partition = f"{table}_p{day:%Y%m%d}"
            native = scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (f"public.{partition}",))
            written = con.execute(f"COPY ({_select(table, day, partition if native else None)}) TO '{part}'"
                                  " (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]  # rows written
            expected = scalar(conn, f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                              _bounds(day))
            if written != expected:
                raise ExportError(f"{table} {day}: wrote {written} rows but PostgreSQL has {expected}; "
                                  "nothing was replaced — run the export again")
            digest = _sha256(part)
            _replace(temporary, final)
            conn.execute(
                "INSERT INTO export_runs (table_name, day, rows, path, sha256, started_at, finished_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (table, day, written, str(final / "part-0.parquet"), digest, started, datetime.now(UTC)),
            )
        return Exported(table, day, written, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        if own:
            con.close()


def _select(table: str, day: date, partition: str | None) -> str:
    """The day's rows, sorted. Reading the day's partition lets DuckDB scan it in parallel (no row of
    that day can be in the default partition once it exists); without one (TimescaleDB, or a day
    that predates the partitions) the parent is filtered instead.
    Unconstrained numerics arrive as DOUBLE and are cast back to exact decimals (exact for the up to
    15 significant digits vendor prices and stakes have); jsonb becomes JSON."""
    columns = []
    for column in schema.metadata.tables[table].columns:
        if type(column.type) is Numeric:  # not Float, its subclass
            columns.append(f"CAST({column.name} AS {PARQUET_DECIMAL}) AS {column.name}")
        elif isinstance(column.type, JSONB):
            columns.append(f"CAST({column.name} AS JSON) AS {column.name}")
        else:
            columns.append(column.name)
    low, high = (bound.isoformat() for bound in _bounds(day))
    in_day = f"received_at >= '{low}' AND received_at < '{high}'"
    select = f"SELECT {', '.join(columns)} FROM pg.public"
    source = f"{select}.{partition}" if partition else f"{select}.{table} WHERE {in_day}"
    return f"SELECT * FROM ({source}) ORDER BY {schema.SORT_KEYS[table]}"


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _replace(temporary: Path, final: Path) -> None:
    """Put the new folder in place; an earlier export of the day is swapped out, then removed."""
    old = final.with_name(final.name + f".old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    temporary.rename(final)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(old)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
