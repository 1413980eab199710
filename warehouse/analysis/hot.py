"""The analysis SQL answered by PostgreSQL alone while every row it can read is hot (issue 28).

The query surface reads a table as its hot rows (PostgreSQL, through DuckDB's postgres scan) plus its
cold files (the days retention dropped). While retention has dropped no day that held rows of a table
the statement reads, its cold part is empty and its answer is PostgreSQL's: the relations are the same SQL on
both engines (warehouse.analysis.relations; tests/test_snapshot_relations.py compares them row for
row), and PostgreSQL runs a fixture's relation over its index in a few milliseconds, where DuckDB
spends tens on planning and windows over the rows it fetched. `Engine.rows` asks here first.

Exactness: one read-only transaction, each statement its own snapshot: the statement, then whether
retention dropped a day that held rows of one of its tables (`retention_runs`); if it did, the rows
are the surface's instead (and its tables are asked no more). Retention drops a day and records it in
one transaction, and cannot drop a partition the statement read until that transaction ends: a day
dropped before the statement shows in the answer after it, one dropped later waited for it. Values come back as the
surface gives them where types differ: JSON and UUIDs as text, times in UTC.
"""

from __future__ import annotations

import re
import threading
from functools import cache
from typing import Any

from warehouse import lake
from warehouse.analysis import relations

# Those of these tables of which retention dropped a day that held rows (a day of none adds no cold
# row: its file is not needed).
RETAINED = ("SELECT coalesce(array_agg(DISTINCT table_name), '{}') FROM retention_runs"
            " WHERE table_name = ANY(%s) AND path IS NOT NULL AND (rows IS NULL OR rows > 0)")
_WORD = re.compile(r"[a-z_][a-z0-9_]*")


def tables_read(sql: str) -> frozenset[str]:
    """The fact tables `sql` can read, directly or through a relation: every name in it, so never fewer."""
    words = set(_WORD.findall(sql.lower()))
    found = set(words & set(lake.EXPORT_TABLES))
    for name in words & set(_reads()):
        found |= _reads()[name]
    return frozenset(found)


@cache
def _reads() -> dict[str, frozenset[str]]:
    """Each relation's name (and the surface's price_candles_1m) → the fact tables it reads, through
    the relations it is built on."""
    bodies = {relation.name: f"{relation.body} {relation.duckdb_body or ''}".lower() for relation in relations.CURRENT}
    bodies["price_candles_1m"] = "price_candles"
    reads: dict[str, frozenset[str]] = {}

    def of(name: str, seen: frozenset[str]) -> frozenset[str]:
        words = set(_WORD.findall(bodies[name]))
        found = set(words & set(lake.EXPORT_TABLES))
        for other in words & set(bodies) - seen - {name}:
            found |= of(other, seen | {name})
        return frozenset(found)

    for name in bodies:
        reads[name] = of(name, frozenset())
    return reads


class HotDays:
    """PostgreSQL at `url`, for the statements whose tables hold no dropped day. One session of its own
    (read-only transactions, opened at the first statement, closed with `close`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cold: set[str] = set()  # tables found with a dropped day: they keep it (retention_runs is a record)
        self._conn: Any = None
        self._lock = threading.Lock()

    def rows(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]] | None:
        """The rows of `sql` (`%s` placeholders) from PostgreSQL, or None: a table it reads has cold days,
        or PostgreSQL does not take the SQL (the surface answers it then)."""
        import psycopg

        tables = tables_read(sql)
        if tables & self.cold:
            return None
        with self._lock:
            for attempt in (1, 2):
                try:
                    conn = self._connection()
                    # BEGIN, the statement, the question and COMMIT sent at once: one round trip.
                    with conn.pipeline(), conn.transaction():
                        # Prepared: a relation's plan over a day's partitions costs PostgreSQL about as much
                        # as running it for one fixture (docs/performance.md, "The query surface on hot days").
                        answer = conn.execute(sql, params or None, prepare=True)
                        retained = conn.execute(RETAINED, (sorted(tables),))
                    rows, (dropped,) = answer.fetchall(), retained.fetchone()
                    break
                except psycopg.errors.FeatureNotSupported:
                    # A relation's columns changed under a prepared statement (`warehouse db upgrade` while
                    # a notebook is open: "cached plan must not change result type"): once more, anew.
                    self._close()
                    if attempt == 2:
                        return None
                except psycopg.OperationalError:
                    self._close()  # the server restarted, or ended the session: the surface asks it anew
                    return None
                except psycopg.ProgrammingError:  # SQL only DuckDB takes, or placeholders psycopg does not
                    return None
        self.cold.update(dropped)
        return None if dropped else list(rows)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Any:
        import psycopg
        from psycopg.types.string import TextLoader

        from warehouse.analysis.surface import APPLICATION_NAME
        from warehouse.store.duckdb import libpq_dsn

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(libpq_dsn(self.url, APPLICATION_NAME), autocommit=True)
            conn.execute("SET TimeZone = 'UTC'")
            for kind in ("json", "jsonb", "uuid"):  # the lake's text, as the surface gives them
                conn.adapters.register_loader(kind, TextLoader)
            conn.autocommit, conn.read_only = False, True
            self._conn = conn
        return self._conn
