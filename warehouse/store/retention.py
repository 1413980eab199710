"""Dropping verified days from PostgreSQL: the cold end of the hot → cold lifecycle.

A UTC day leaves PostgreSQL only whole (every fact table together), only when older than the days
kept, and only when, at that moment, every table-day's latest export is verified: its file exists,
hashes to the sha256 `export_runs` recorded, and holds as many rows as PostgreSQL has for that day
now (late rows replayed from a spool carry old `received_at`s: a changed day is exported again
before it may go). A table with no rows that day and no export has nothing to lose. The drop
itself is `warehouse_drop_day` (migration 0006), which counts again under a lock and records every
table-day in `retention_runs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from warehouse.lake import file_sha256
from warehouse.schema import FACT_TABLES
from warehouse.store.database import scalar
from warehouse.store.exports import days_held


@dataclass(frozen=True)
class TableDay:
    table: str
    rows: int  # in PostgreSQL now
    path: str | None = None  # of the latest export, when there is one
    sha256: str | None = None


@dataclass
class Verdict:
    """One day: droppable (every table verified) or kept, with the reason."""

    day: date
    tables: list[TableDay] = field(default_factory=list)
    problem: str | None = None
    bytes: int = 0  # what PostgreSQL holds for the day (tables and indexes), freed by dropping it

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def cutoff(keep_days: int, today: date | None = None) -> date:
    """The first day kept: `keep_days` UTC days are kept, today included."""
    return (today or datetime.now(UTC).date()) - timedelta(days=keep_days - 1)


def candidate_days(url: str, before: date) -> list[date]:
    """Days before `before` that PostgreSQL holds partitions (or chunks) of, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [day for day in days_held(conn) if day < before]


def verify(url: str, day: date, *, hash_file: bool = True) -> Verdict:
    """Whether `day` may be dropped now, and what it holds."""
    verdict = Verdict(day)
    low = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        exports = {table: (rows, path, digest) for table, rows, path, digest in conn.execute(
            "SELECT DISTINCT ON (table_name) table_name, rows, path, sha256 FROM export_runs WHERE day = %s"
            " ORDER BY table_name, finished_at DESC, id DESC", (day,))}
        for table in FACT_TABLES:
            rows = int(scalar(conn, f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                              (low, low + timedelta(days=1))))
            exported = exports.get(table)
            verdict.tables.append(TableDay(table, rows, *(exported[1:] if exported else (None, None))))
            if verdict.problem is None:
                verdict.problem = _problem(table, rows, exported, hash_file)
        verdict.bytes = _bytes(conn, day)
    return verdict


def _problem(table: str, rows: int, exported: tuple[int, str, str] | None, hash_file: bool) -> str | None:
    if exported is None:
        return None if rows == 0 else f"{table} has {rows:,} rows and was never exported"
    exported_rows, path, digest = exported
    if exported_rows != rows:
        return f"{table} was exported with {exported_rows:,} rows but PostgreSQL has {rows:,} now (late rows?)"
    file = Path(path)
    if not file.is_file():
        return f"{table}'s export {file} is missing"
    if hash_file and file_sha256(file) != digest:
        return f"{table}'s export {file} no longer matches the sha256 export_runs recorded"
    return None


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


def _bytes(conn: psycopg.Connection[Any], day: date) -> int:
    """PostgreSQL's size of the day: its partitions, or its chunks (compressed or not)."""
    storage = scalar(conn, "SELECT value FROM warehouse_meta WHERE key = 'storage'")
    if storage == "native":
        names = [f"public.{table}_p{day:%Y%m%d}" for table in FACT_TABLES]
        return int(scalar(conn, "SELECT coalesce(sum(pg_total_relation_size(to_regclass(n))), 0)"
                                " FROM unnest(%s::text[]) n WHERE to_regclass(n) IS NOT NULL", (names,)))
    low = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(scalar(conn, "SELECT coalesce(sum(s.total_bytes), 0) FROM timescaledb_information.chunks c,"
                            " LATERAL chunks_detailed_size(format('%%I.%%I', c.hypertable_schema,"
                            " c.hypertable_name)::regclass) s WHERE s.chunk_name = c.chunk_name"
                            " AND c.range_start = %s AND c.hypertable_name = ANY(%s)", (low, list(FACT_TABLES))))


