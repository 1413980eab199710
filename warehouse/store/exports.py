"""What the Parquet export asks of PostgreSQL: which table-days to export, each day's rows in the
lake's types (through DuckDB's postgres extension, attached read-only), the check that they all fit
it, and the `export_runs` record of each exported table-day. warehouse.export writes the files.

Every value reaches DuckDB exactly: PostgreSQL sends each unconstrained numeric as a decimal of the
lake's scale (the postgres extension would read it as a DOUBLE), json and jsonb as their text, UUIDs
as canonical text. A value the lake cannot hold exactly arrives as NULL in that read, and the
day's check names it, so the day fails instead of being exported with a changed value.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from warehouse import lake, schema
from warehouse.records import ExportRun
from warehouse.store.database import scalar

if TYPE_CHECKING:
    import duckdb

# Rows can still arrive for a past day: a spool replayed after an outage carries the received_at
# of when the frames came in. An exported day this recent is exported again if its count changed.
LATE_ROWS_DAYS = 7
ATTACHED = "pg"  # the catalog name PostgreSQL is attached as in DuckDB
_PARTITION_DAY = re.compile(r"_p(\d{8})$")


class ExportError(RuntimeError):
    """A table-day cannot be exported as it is; the message (one line each) says which and what to do."""


@dataclass(frozen=True)
class DayCheck:
    rows: int  # PostgreSQL's count of the table-day now
    unfit: tuple[str, str, str] | None  # (column, value as PostgreSQL prints it, the limit) the lake cannot hold


def duckdb_connection(url: str) -> duckdb.DuckDBPyConnection:
    """DuckDB (UTC) with PostgreSQL attached read-only as `pg`, through the wheel-shipped postgres
    extension: nothing is ever downloaded."""
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
    con.execute("SET enable_progress_bar = false")  # callers show their own progress, on a terminal only
    dsn = _libpq_dsn(url).replace("'", "''")  # ATTACH takes no bound parameters: an escaped literal
    con.execute(f"ATTACH '{dsn}' AS {ATTACHED} (TYPE postgres, READ_ONLY)")
    return con


def _libpq_dsn(url: str) -> str:
    """DuckDB takes libpq URLs as they are; only our driver-style prefix needs removing."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def day_rows(table: str, day: date, slices: int = 1) -> str:
    """A DuckDB table expression: the table-day's rows, every column in its lake type (lake.columns),
    read as `slices` consecutive time slices of the day, which DuckDB reads in parallel (one query and
    connection each). PostgreSQL prunes the parent to the day's partition (or TimescaleDB chunk) and
    finds each slice's rows with the received_at BRIN index."""
    columns = ", ".join(_lake_column(column) for column in schema.metadata.tables[table].columns)
    start = bounds(day)[0]
    edges = [(start + timedelta(days=1) * part / slices).isoformat() for part in range(slices + 1)]
    reads = []
    for low, high in itertools.pairwise(edges):
        select = f"SELECT {columns} FROM public.{table} WHERE received_at >= '{low}' AND received_at < '{high}'"
        reads.append(f"SELECT * FROM postgres_query('{ATTACHED}', '{select.replace(chr(39), chr(39) * 2)}')")
    return f"({' UNION ALL '.join(reads)})"


def _lake_column(column: Any) -> str:
    name: str = column.name
    if lake.as_text(column.type):
        return f"{name}::text AS {name}"
    if lake.is_decimal(column.type):
        # The cast outside the CASE carries the type's scale to DuckDB (a CASE would drop it).
        return f"(CASE WHEN {_fits(name)} THEN {name} END)::numeric({lake.DECIMAL_PRECISION}, {lake.DECIMAL_SCALE})" \
               f" AS {name}"
    return name


def _fits(name: str) -> str:
    """SQL: the numeric `name` is exactly a lake decimal (NaN and ±Infinity are not below 1e20)."""
    return f"abs({name}) < 1e{lake.DECIMAL_INTEGER_DIGITS} AND round({name}, {lake.DECIMAL_SCALE}) = {name}"


def check_day(url: str, table: str, day: date) -> DayCheck:
    """The table-day's row count in PostgreSQL now, and one value (if any) the lake cannot hold,
    found in the same scan."""
    checks = []
    for column in schema.metadata.tables[table].columns:
        name = column.name
        if lake.is_decimal(column.type):
            checks.append((name, lake.DECIMAL_LIMIT, f"NOT ({_fits(name)})"))
        elif lake.is_timestamp(column.type) and name != "received_at":  # the day bounds received_at
            checks.append((name, lake.TIMESTAMP_LIMIT, f"NOT ({name} >= '{lake.TIMESTAMP_FIRST}'"
                                                       f" AND {name} < '{lake.TIMESTAMP_END}')"))
    found = "".join(f", min({name}::text) FILTER (WHERE {condition})" for name, _, condition in checks)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*){found} FROM {table} WHERE received_at >= %s AND received_at < %s",
                           bounds(day)).fetchone()
    assert row is not None
    unfit = next(((name, value, limit) for (name, limit, _), value in zip(checks, row[1:], strict=True)
                  if value is not None), None)
    return DayCheck(row[0], unfit)


def record(url: str, run: ExportRun) -> None:
    """Record one exported table-day in `export_runs` (what retention verifies a day against)."""
    columns = ", ".join(ExportRun._fields)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO export_runs ({columns}) VALUES ({', '.join(['%s'] * len(run))})", run)


def pending(url: str, table_names: tuple[str, ...], since: date | None = None, until: date | None = None,
            redo: bool = False, today_too: bool = False) -> list[tuple[str, date]]:
    """Complete UTC days (before today; today as well with `today_too`) from the first day PostgreSQL
    holds (a partition or chunk: found in the catalog, no table is scanned), for each of
    `table_names`, not exported yet (or exported with another row count than PostgreSQL now has for a
    recent day); every such day with `redo`. Every table gets every day, with or without rows, so a
    reader of any one table's folder finds it. A day retention dropped is never pending: its export
    is the only copy, and PostgreSQL holds at most rows that arrived after (the query surface reads
    those from PostgreSQL)."""
    today = datetime.now(UTC).date()
    newest = today if today_too else today - timedelta(days=1)
    last = min(until or newest, newest)
    recent = today - timedelta(days=LATE_ROWS_DAYS)
    work = []
    with psycopg.connect(url, autocommit=True) as conn:
        latest = [] if redo else conn.execute("SELECT DISTINCT ON (table_name, day) table_name, day, rows"
                                              " FROM export_runs ORDER BY table_name, day, finished_at DESC").fetchall()
        exported: dict[tuple[str, date], int] = {(table, day): rows for table, day, rows in latest}
        held = days_held(conn)
        if not held:
            return []
        retained = {(table, day) for table, day in conn.execute("SELECT DISTINCT table_name, day FROM retention_runs")}
        first_day = max(held[0], since or date.min)
        for table in table_names:
            counts: dict[date, int] = dict(conn.execute(
                f"SELECT (received_at AT TIME ZONE 'UTC')::date, count(*) FROM {table}"
                " WHERE received_at >= %s GROUP BY 1", (bounds(recent)[0],)).fetchall())
            day = first_day
            while day <= last:
                done = exported.get((table, day))
                if (table, day) not in retained and (
                        done is None or (day >= recent and counts.get(day, 0) != done)):
                    work.append((table, day))
                day += timedelta(days=1)
    return work


def days_held(conn: psycopg.Connection[Any]) -> list[date]:
    """The UTC days PostgreSQL holds rows of, from the catalog, oldest first: daily partitions (and
    the days of rows in a default partition) on plain PostgreSQL, 1-day chunks on TimescaleDB."""
    if scalar(conn, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == "native":
        names = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                             " WHERE i.inhparent::regclass::text = ANY(%s)", (list(lake.EXPORT_TABLES),)).fetchall()
        days = {datetime.strptime(m.group(1), "%Y%m%d").date() for (name,) in names
                if (m := _PARTITION_DAY.search(name))}
        for table in lake.EXPORT_TABLES:  # rows from before their day's partition existed (rare; small)
            days |= {row[0] for row in conn.execute(
                f"SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM {table}_default")}
    else:
        days = {row[0] for row in conn.execute(
            "SELECT DISTINCT (range_start AT TIME ZONE 'UTC')::date FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = ANY(%s)", (list(lake.EXPORT_TABLES),))}
    return sorted(days)


def bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day as [start, end) of received_at."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
