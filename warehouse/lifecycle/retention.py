"""Dropping verified days from PostgreSQL: the cold end of the hot → cold lifecycle.

A UTC day leaves PostgreSQL only whole (every fact table together), only when older than the days
kept, and only when, at that moment, every table-day's latest export is verified
(warehouse.lifecycle.verify). The drop itself is `warehouse_drop_day` (migration 0006), which counts
again under a lock and records every table-day in `retention_runs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg

from warehouse.lifecycle.days import days_held
from warehouse.lifecycle.verify import Verdict, verify
from warehouse.store.database import scalar


def cutoff(keep_days: int, today: date | None = None) -> date:
    """The first day kept: `keep_days` UTC days are kept, today included."""
    return (today or datetime.now(UTC).date()) - timedelta(days=keep_days - 1)


def candidate_days(url: str, before: date) -> list[date]:
    """Days before `before` that PostgreSQL holds partitions (or chunks) of, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [day for day in days_held(conn) if day < before]


def drop(url: str, verdict: Verdict) -> int:
    """Drop a verified day (all tables together, counted again under a lock); the rows dropped."""
    expected = {t.table: {"rows": t.rows, "path": t.path, "sha256": t.sha256} for t in verdict.tables}
    with psycopg.connect(url, autocommit=True) as conn:
        return int(scalar(conn, "SELECT warehouse_drop_day(%s, %s::jsonb)",
                          (verdict.day, orjson.dumps(expected).decode())))


@dataclass(frozen=True)
class Outcome:
    """What became of one day older than the days kept."""

    verdict: Verdict  # its `problem` says why a day that failed verification was kept
    dropped: bool = False
    refused: Exception | None = None  # verified, then refused by warehouse_drop_day (counted again under its lock)


def retain(url: str, keep_days: int, *, today: date | None = None, dry_run: bool = False) -> Iterator[Outcome]:
    """Each day PostgreSQL holds before the `keep_days` kept, oldest first: verified, then dropped
    (unless `dry_run`). `today` defaults to the real UTC day."""
    for day in candidate_days(url, cutoff(keep_days, today)):
        verdict = verify(url, day)
        if verdict.problem is not None or dry_run:
            yield Outcome(verdict)
            continue
        try:
            drop(url, verdict)
        except Exception as exc:  # the day stays whole
            yield Outcome(verdict, refused=exc)
            continue
        yield Outcome(verdict, dropped=True)


def retained_files(url: str) -> dict[str, list[tuple[date, str]]]:
    """Per table, the days retention dropped from PostgreSQL and the Parquet file each lives in now
    (a table with no rows that day has no file and is left out)."""
    found: dict[str, list[tuple[date, str]]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table, day, path in conn.execute("SELECT DISTINCT ON (table_name, day) table_name, day, path"
                                             " FROM retention_runs WHERE path IS NOT NULL"
                                             " ORDER BY table_name, day, dropped_at DESC"):
            found.setdefault(table, []).append((day, path))
    return found

