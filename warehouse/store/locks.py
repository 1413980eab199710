"""Who holds locks on the fact tables: what a job that needs them exclusively (retention's drop) asks
before it queues behind them — a lock request waiting in PostgreSQL's queue makes every later one
wait too, the collector's inserts included — and names when it gives up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

# Every relation of the tables: themselves and, down the inheritance tree, their partitions (plain
# PostgreSQL) or chunks (TimescaleDB).
_HOLDERS = """
WITH RECURSIVE related(oid) AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relname = ANY(%(tables)s)
    UNION SELECT i.inhrelid FROM pg_inherits i JOIN related r ON i.inhparent = r.oid
)
SELECT a.pid, a.application_name, a.usename, a.state, a.xact_start, a.backend_start
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid()
  AND a.pid IN (SELECT l.pid FROM pg_locks l JOIN related r ON l.relation = r.oid WHERE l.granted)
  AND coalesce(a.xact_start, a.backend_start) <= now() - %(older)s
ORDER BY coalesce(a.xact_start, a.backend_start), a.pid
"""


@dataclass(frozen=True)
class Holder:
    """A session holding a lock on a table (or one of its partitions or chunks)."""

    pid: int
    application_name: str | None  # null or '' when the role may not see it, or the client set none
    user: str | None
    state: str | None  # 'idle in transaction': a client that began a transaction and stopped
    since: datetime | None  # the start of its transaction

    def __str__(self) -> str:
        name = f"application_name {self.application_name!r}" if self.application_name else "no application_name"
        began = f"; its transaction began {self.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        return f"pid {self.pid} ({name}, user {self.user or '?'}, {self.state or 'state not visible'}{began})"


def holders(conn: psycopg.Connection[Any], tables: Sequence[str], *,
            older_than: timedelta = timedelta(0)) -> list[Holder]:
    """The other sessions holding a lock on `tables`, in a transaction open for at least `older_than`,
    oldest first."""
    rows = conn.execute(_HOLDERS, {"tables": list(tables), "older": older_than}).fetchall()
    return [Holder(pid, name, user, state, xact_start) for pid, name, user, state, xact_start, _ in rows]
