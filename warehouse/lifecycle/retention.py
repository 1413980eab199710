"""Dropping verified days from PostgreSQL: the cold end of the hot → cold lifecycle.

A UTC day leaves PostgreSQL only whole (every fact table together), only when older than the days
kept, and only when, at that moment, every table-day's latest export is verified in the configured
lake (warehouse.lifecycle.verify). A run holds the maintenance lock (warehouse.lifecycle.lock), so
no export runs beside it on any host. The drop itself is `warehouse_drop_day` (migrations 0006,
0009), which counts again under a lock and records every table-day in `retention_runs`.

Its locks are exclusive: while the drop waits for one, every later request for the table waits behind
it, the collector's inserts included. So it never queues behind a transaction already open (an
analyst's, an export's): it waits for it outside the queue, and when it does ask, it waits at most
LOCK_TIMEOUT; after LOCK_WAIT it gives the day up and names who held the tables (`Blocked`).

A day that could not be dropped says why: not exported (again) yet — the nightly export does it —
or anything else (a file failing its check, the function refusing, a role that may not drop, tables
held too long), which is a failure of the run (`Outcome.failed`). A dry run checks the same and
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

from warehouse.lifecycle.days import days_held
from warehouse.lifecycle.lock import maintenance
from warehouse.lifecycle.storage import BucketError, Directory, Lake, open_lake
from warehouse.lifecycle.verify import Verdict, verify
from warehouse.store.database import scalar
from warehouse.store.locks import Holder, holders

LOCK_TIMEOUT = timedelta(seconds=1)  # the longest the collector's inserts wait behind a drop asking for a lock
LOCK_WAIT = 60.0  # seconds a drop waits for the tables' other holders before it gives the day up
_RETRY = 2.0  # seconds between looks


class Blocked(RuntimeError):
    """A day was not dropped: other sessions held its tables for LOCK_WAIT; the message names them."""


def cutoff(keep_days: int, today: date | None = None) -> date:
    """The first day kept: `keep_days` UTC days are kept, today included."""
    return (today or datetime.now(UTC).date()) - timedelta(days=keep_days - 1)


def candidate_days(conn: psycopg.Connection[Any], before: date) -> list[date]:
    """Days before `before` that PostgreSQL holds partitions (or chunks, or rows) of, oldest first."""
    return [day for day in days_held(conn) if day < before]


def drop(conn: psycopg.Connection[Any], verdict: Verdict, *, wait: float = LOCK_WAIT) -> int:
    """Drop a verified day (all tables together, counted again under a lock; on a session holding the
    maintenance lock, autocommit, lock_timeout LOCK_TIMEOUT: retain sets both); the rows dropped.
    Waits up to `wait` seconds for other sessions' transactions on the tables, then raises Blocked
    naming them."""
    expected = verdict.expected()
    deadline = time.monotonic() + wait
    while True:
        # A transaction open longer than a lock may be waited for is not a collector's batch: asking
        # now would queue the collector behind it.
        held = holders(conn, list(expected), older_than=LOCK_TIMEOUT)
        if not held:
            try:
                return int(scalar(conn, "SELECT warehouse_drop_day(%s, %s::jsonb)",
                                  (verdict.day, orjson.dumps(expected).decode())))
            except psycopg.errors.LockNotAvailable:
                held = holders(conn, list(expected))
        if time.monotonic() >= deadline:
            raise Blocked(_blocked(held, wait))
        time.sleep(min(_RETRY, max(0.0, deadline - time.monotonic())))


def _blocked(held: list[Holder], wait: float) -> str:
    who = str(held[0]) + (f" and {len(held) - 1} other session(s)" if len(held) > 1 else "") if held else \
        "sessions that hold them only briefly, again and again"
    return (f"not dropped: its tables stayed locked for {wait:g} s by {who}; end that session (or its"
            " transaction: SELECT pg_terminate_backend(pid) as its owner or a superuser), then retain again")


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


def retain(url: str, keep_days: int, lake: Path | Lake, *, today: date | None = None,
           dry_run: bool = False, lock_wait: float = LOCK_WAIT) -> Iterator[Outcome]:
    """Each day PostgreSQL holds before the `keep_days` kept, oldest first: verified against `lake`
    (the configured one), then dropped (unless `dry_run`). `today` defaults to the real UTC day. A
    day whose tables stay held for `lock_wait` seconds is refused (Blocked); the days after it are
    tried once, without waiting."""
    lake = open_lake(lake)
    with maintenance(url, "retain") as conn:
        conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT.total_seconds() * 1000)}")
        if not isinstance(lake, Directory) or lake.path.is_dir():
            lake.tie(conn)
        allowed = scalar(conn, "SELECT has_function_privilege('warehouse_drop_day(date, jsonb)', 'EXECUTE')")
        for day in candidate_days(conn, cutoff(keep_days, today)):
            try:
                verdict = verify(conn, day, lake)
            except BucketError as exc:  # the bucket did not answer: the day is kept, and the run failed
                verdict = Verdict(day, problem=str(exc))
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
                    drop(conn, verdict, wait=lock_wait)
                except (psycopg.Error, Blocked) as exc:  # the day stays whole
                    if isinstance(exc, Blocked):
                        lock_wait = 0.0  # the same holders: the next days say so at once
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
