"""Dropping verified days from PostgreSQL: the cold end of the hot → cold lifecycle.

A UTC day leaves PostgreSQL only whole (every fact table together), only when older than the days
kept, and only when, at that moment, every table-day's latest export is verified
(warehouse.lifecycle.verify). The drop itself is `warehouse_drop_day` (migration 0006), which counts
again under a lock and records every table-day in `retention_runs`.

Its locks are exclusive: while the drop waits for one, every later request for the table waits behind
it, the collector's inserts included. So it never queues behind a transaction already open (an
analyst's, an export's): it waits for it outside the queue, and when it does ask, it waits at most
LOCK_TIMEOUT; after LOCK_WAIT it gives the day up and names who held the tables (`Blocked`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg

from warehouse.lifecycle.days import days_held
from warehouse.lifecycle.verify import Verdict, verify
from warehouse.schema import FACT_TABLES
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


def candidate_days(url: str, before: date) -> list[date]:
    """Days before `before` that PostgreSQL holds partitions (or chunks) of, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [day for day in days_held(conn) if day < before]


def drop(url: str, verdict: Verdict, *, wait: float = LOCK_WAIT) -> int:
    """Drop a verified day (all tables together, counted again under a lock); the rows dropped. Waits
    up to `wait` seconds for other sessions' transactions on the tables (Blocked, naming them)."""
    expected = {t.table: {"rows": t.rows, "path": t.path, "sha256": t.sha256} for t in verdict.tables}
    deadline = time.monotonic() + wait
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            # A transaction open longer than a lock may be waited for is not a collector's batch:
            # asking now would queue the collector behind it.
            held = holders(conn, FACT_TABLES, older_than=LOCK_TIMEOUT)
            if not held:
                conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{LOCK_TIMEOUT.total_seconds()}s",))
                try:
                    return int(scalar(conn, "SELECT warehouse_drop_day(%s, %s::jsonb)",
                                      (verdict.day, orjson.dumps(expected).decode())))
                except psycopg.errors.LockNotAvailable:
                    held = holders(conn, FACT_TABLES)
        if time.monotonic() >= deadline:
            raise Blocked(_blocked(verdict.day, held, wait))
        time.sleep(min(_RETRY, max(0.0, deadline - time.monotonic())))


def _blocked(day: date, held: list[Holder], wait: float) -> str:
    who = str(held[0]) + (f" and {len(held) - 1} other session(s)" if len(held) > 1 else "") if held else \
        "sessions that hold them only briefly, again and again"
    return (f"not dropped: its tables were held for {wait:g} s by {who}; end that session (or its"
            " transaction: SELECT pg_terminate_backend(pid) as its owner or a superuser), then retain again")


@dataclass(frozen=True)
class Outcome:
    """What became of one day older than the days kept."""

    verdict: Verdict  # its `problem` says why a day that failed verification was kept
    dropped: bool = False
    refused: Exception | None = None  # verified, then refused by warehouse_drop_day (counted again under its lock)


def retain(url: str, keep_days: int, *, today: date | None = None, dry_run: bool = False,
           lock_wait: float = LOCK_WAIT) -> Iterator[Outcome]:
    """Each day PostgreSQL holds before the `keep_days` kept, oldest first: verified, then dropped
    (unless `dry_run`). `today` defaults to the real UTC day. A day whose tables stay held for
    `lock_wait` seconds is refused (Blocked); the days after it are tried once, without waiting."""
    for day in candidate_days(url, cutoff(keep_days, today)):
        verdict = verify(url, day)
        if verdict.problem is not None or dry_run:
            yield Outcome(verdict)
            continue
        try:
            drop(url, verdict, wait=lock_wait)
        except Exception as exc:  # the day stays whole
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
                                             " ORDER BY table_name, day, dropped_at DESC"):
            found.setdefault(table, []).append((day, path))
    return found

