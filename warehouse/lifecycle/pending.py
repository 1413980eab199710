"""Which table-days the export has to do: what `export_runs` does not hold yet in this lake, or holds
with another row count than PostgreSQL has now for a recent day; and the late rows of days retention
moved to the lake already, to be merged into their files."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from warehouse.lifecycle.days import bounds, days_held
from warehouse.lifecycle.storage import Lake, open_lake
from warehouse.schema import RECEIVED_AT_END

# Rows can still arrive for a past day: a spool replayed after an outage carries the received_at
# of when the frames came in. An exported day this recent is exported again if its count changed.
LATE_ROWS_DAYS = 7


def pending(url: str, table_names: tuple[str, ...], since: date | None = None, until: date | None = None,
            redo: bool = False, today_too: bool = False, lake: Path | Lake | None = None) -> list[tuple[str, date]]:
    """Complete UTC days (before today; today as well with `today_too`) from the first day PostgreSQL
    holds (a partition or chunk: found in the catalog, no table is scanned), for each of
    `table_names`, not exported to `lake` yet (any lake when None), or exported with another row count
    than PostgreSQL now has for a recent day; every such day with `redo`. Every table gets every day,
    with or without rows, so a reader of any one table's folder finds it. A day retention moved is
    pending only for the tables with rows that arrived after (to be merged into its files), or with
    `redo` (the export then says where it is)."""
    today = datetime.now(UTC).date()
    newest = today if today_too else today - timedelta(days=1)
    last = min(until or newest, newest)
    recent = today - timedelta(days=LATE_ROWS_DAYS)
    work = []
    own = None if lake is None else open_lake(lake)
    with psycopg.connect(url, autocommit=True) as conn:
        latest = [] if redo else conn.execute("SELECT DISTINCT ON (table_name, day) table_name, day, rows, path"
                                              " FROM export_runs ORDER BY table_name, day, finished_at DESC, id DESC"
                                              ).fetchall()
        exported = {(table, day): rows for table, day, rows, path in latest
                    if own is None or own.is_own(table, day, path)}
        held = days_held(conn)
        if not held:
            return []  # nothing in PostgreSQL: nothing to export, and no late rows to merge
        retained = {(table, day) for table, day in conn.execute("SELECT DISTINCT table_name, day FROM retention_runs")}
        first_day = max(min([held[0], *(day for _, day in retained)]), since or date.min)
        for table in table_names:
            counts: dict[date, int] = dict(conn.execute(
                f"SELECT (received_at AT TIME ZONE 'UTC')::date, count(*) FROM {table}"
                " WHERE received_at >= %s AND received_at < %s GROUP BY 1", (bounds(recent)[0], RECEIVED_AT_END)
            ).fetchall())
            for day in held:  # late rows of days moved to the lake (of any age): few, in a default partition
                if (table, day) in retained and day < recent and first_day <= day <= last:
                    counts[day] = _count(conn, table, day)
            day = first_day
            while day <= last:
                done = exported.get((table, day))
                if (table, day) in retained:
                    if redo or counts.get(day, 0):
                        work.append((table, day))
                elif done is None or (day >= recent and counts.get(day, 0) != done):
                    work.append((table, day))
                day += timedelta(days=1)
    return work


def _count(conn: psycopg.Connection[Any], table: str, day: date) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                       bounds(day)).fetchone()
    return int(row[0]) if row else 0
