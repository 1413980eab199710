"""Dropping verified days from PostgreSQL: the cold end of the hot → cold lifecycle.

A UTC day leaves PostgreSQL only whole (every fact table together), only when older than the days
kept, and only when, at that moment, every table-day's latest export is verified in the configured
lake (warehouse.lifecycle.verify). A run holds the maintenance lock (warehouse.lifecycle.lock), so
no export runs beside it on any host. The drop itself is `warehouse_drop_day` (migrations 0006,
0009), which counts again under a lock and records every table-day in `retention_runs`.

A day that could not be dropped says why: not exported (again) yet — the nightly export does it —
or anything else (a file failing its check, the function refusing, a role that may not drop, a lock
not had in time), which is a failure of the run (`Outcome.failed`). A dry run checks the same and
says the same, dropping nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from warehouse.lifecycle import lakes
from warehouse.lifecycle.days import days_held
from warehouse.lifecycle.lock import maintenance
from warehouse.lifecycle.verify import Verdict, verify
from warehouse.store.database import scalar

LOCK_TIMEOUT_MS = 2000  # what the collector may wait behind a drop; a day whose tables are busy longer is retried
ATTEMPTS = 3
RETRY_S = 1.0
_BLOCKERS = ("SELECT DISTINCT a.pid, a.application_name, a.usename FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
             " WHERE l.granted AND l.pid <> pg_backend_pid() AND l.relation IN (SELECT oid FROM pg_class"
             " WHERE relname = ANY(%s) AND relnamespace = 'public'::regnamespace) ORDER BY 1 LIMIT 3")


def cutoff(keep_days: int, today: date | None = None) -> date:
    """The first day kept: `keep_days` UTC days are kept, today included."""
    return (today or datetime.now(UTC).date()) - timedelta(days=keep_days - 1)


def candidate_days(conn: psycopg.Connection[Any], before: date) -> list[date]:
    """Days before `before` that PostgreSQL holds partitions (or chunks, or rows) of, oldest first."""
    return [day for day in days_held(conn) if day < before]


def drop(conn: psycopg.Connection[Any], verdict: Verdict) -> int:
    """Drop a verified day (all tables together, counted again under a lock; on a session holding the
    maintenance lock); the rows dropped. A lock not had in LOCK_TIMEOUT_MS is tried again, ATTEMPTS
    times, then reported with who holds the tables (psycopg.errors.LockNotAvailable)."""
    expected = orjson.dumps(verdict.expected()).decode()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return int(scalar(conn, "SELECT warehouse_drop_day(%s, %s::jsonb)", (verdict.day, expected)))
        except psycopg.errors.LockNotAvailable:
            if attempt == ATTEMPTS:
                raise psycopg.errors.LockNotAvailable(
                    f"the day's tables stayed locked ({ATTEMPTS} tries of {LOCK_TIMEOUT_MS / 1000:g} s) by"
                    f" {blockers(conn, list(verdict.expected()))}; run retain again later") from None
            time.sleep(RETRY_S)
    raise AssertionError("unreachable")


def blockers(conn: psycopg.Connection[Any], tables: list[str]) -> str:
    found = conn.execute(_BLOCKERS, (tables,)).fetchall()
    return ", ".join(f"pid {pid} ({name or 'no application name'}, role {role})" for pid, name, role in found) \
        or "sessions gone since"


@dataclass(frozen=True)
class Outcome:
    """What became of one day older than the days kept."""

    verdict: Verdict  # its `problem` says why a day that failed verification was kept
    dropped: bool = False
    refused: Exception | None = None  # verified, then refused (by warehouse_drop_day, or the role's rights)

    @property
    def failed(self) -> bool:
        """Kept for another reason than not being exported (again) yet: the run did not do its job."""
        return self.refused is not None or (self.verdict.problem is not None and not self.verdict.pending)


class NotAllowed(PermissionError):
    """The role retention runs as may not drop days."""


def retain(url: str, keep_days: int, lake: Path, *, today: date | None = None,
           dry_run: bool = False) -> Iterator[Outcome]:
    """Each day PostgreSQL holds before the `keep_days` kept, oldest first: verified against `lake`
    (the configured one), then dropped (unless `dry_run`). `today` defaults to the real UTC day."""
    with maintenance(url, "retain") as conn:
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        if lake.is_dir():
            lakes.tie(conn, lake)
        allowed = scalar(conn, "SELECT has_function_privilege('warehouse_drop_day(date, jsonb)', 'EXECUTE')")
        for day in candidate_days(conn, cutoff(keep_days, today)):
            verdict = verify(conn, day, lake)
            if verdict.problem is not None:
                yield Outcome(verdict)
            elif not allowed:
                role = scalar(conn, "SELECT current_user")
                yield Outcome(verdict, refused=NotAllowed(
                    f"role {role} may not drop days: run `warehouse retain` as a login in warehouse_maintainer"
                    " (README: Roles)"))
            elif dry_run:
                yield Outcome(verdict)
            else:
                try:
                    drop(conn, verdict)
                except psycopg.Error as exc:  # the day stays whole
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
                                             " ORDER BY table_name, day, dropped_at DESC, id DESC"):
            found.setdefault(table, []).append((day, path))
    return found
