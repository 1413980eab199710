"""The UTC days PostgreSQL holds, as the export and retention count them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from warehouse.lake import EXPORT_TABLES
from warehouse.schema import RECEIVED_AT_END, RECEIVED_AT_FIRST, RECEIVED_AT_WINDOW
from warehouse.store.database import scalar

_PARTITION_DAY = re.compile(r"_p(\d{8})$")
FIRST_DAY, END_DAY = RECEIVED_AT_FIRST.date(), RECEIVED_AT_END.date()


def days_held(conn: psycopg.Connection[Any]) -> list[date]:
    """The UTC days PostgreSQL holds rows of, from the catalog, oldest first: daily partitions (and
    the days of rows in a default partition) on plain PostgreSQL, 1-day chunks on TimescaleDB. Only
    days inside the window the database keeps received_at in (warehouse.schema): rows outside it,
    older than migration 0011, are never a day to export or retain (`outside_window` counts them)."""
    if scalar(conn, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == "native":
        names = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                             " WHERE i.inhparent::regclass::text = ANY(%s)", (list(EXPORT_TABLES),)).fetchall()
        days = {datetime.strptime(m.group(1), "%Y%m%d").date() for (name,) in names
                if (m := _PARTITION_DAY.search(name))}
        for table in EXPORT_TABLES:  # rows from before their day's partition existed (rare; small)
            days |= {row[0] for row in conn.execute(
                f"SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date FROM {table}_default"
                f" WHERE {RECEIVED_AT_WINDOW}")}
    else:
        days = {row[0] for row in conn.execute(
            "SELECT DISTINCT (range_start AT TIME ZONE 'UTC')::date FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = ANY(%s) AND range_start >= %s"
            " AND range_start < %s", (list(EXPORT_TABLES), RECEIVED_AT_FIRST, RECEIVED_AT_END))}
    return sorted(day for day in days if FIRST_DAY <= day < END_DAY)


def outside_window(url: str) -> dict[str, int]:
    """Rows per table whose received_at is outside the window (only a warehouse older than migration
    0011 can hold any): found by partition pruning or chunk exclusion, not by reading every day."""
    with psycopg.connect(url, autocommit=True) as conn:
        counts = {table: int(scalar(conn, f"SELECT count(*) FROM {table} WHERE NOT ({RECEIVED_AT_WINDOW})"))
                  for table in EXPORT_TABLES}
    return {table: count for table, count in counts.items() if count}


def bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day as [start, end) of received_at."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
