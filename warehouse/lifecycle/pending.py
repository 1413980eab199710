"""Which table-days the export has to do: what `export_runs` does not hold yet, or holds with another
row count than PostgreSQL has now for a recent day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import psycopg

from warehouse.lifecycle.days import bounds, days_held
from warehouse.schema import RECEIVED_AT_END

# Rows can still arrive for a past day: a spool replayed after an outage carries the received_at
# of when the frames came in. An exported day this recent is exported again if its count changed.
LATE_ROWS_DAYS = 7


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
                " WHERE received_at >= %s AND received_at < %s GROUP BY 1", (bounds(recent)[0], RECEIVED_AT_END)
            ).fetchall())
            day = first_day
            while day <= last:
                done = exported.get((table, day))
                if (table, day) not in retained and (
                        done is None or (day >= recent and counts.get(day, 0) != done)):
                    work.append((table, day))
                day += timedelta(days=1)
    return work
