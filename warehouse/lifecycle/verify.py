"""Whether a UTC day may leave PostgreSQL: every table-day's latest export is verified — its file
exists, hashes to the sha256 `export_runs` recorded, and holds as many rows as PostgreSQL has for that
day now (late rows replayed from a spool carry old `received_at`s: a changed day is exported again
before it may go). A table with no rows that day and no export has nothing to lose.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from warehouse.lifecycle.days import bounds
from warehouse.schema import FACT_TABLES
from warehouse.store.database import scalar


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


def verify(url: str, day: date, *, hash_file: bool = True) -> Verdict:
    """Whether `day` may be dropped now, and what it holds."""
    verdict = Verdict(day)
    with psycopg.connect(url, autocommit=True) as conn:
        exports = {table: (rows, path, digest) for table, rows, path, digest in conn.execute(
            "SELECT DISTINCT ON (table_name) table_name, rows, path, sha256 FROM export_runs WHERE day = %s"
            " ORDER BY table_name, finished_at DESC, id DESC", (day,))}
        for table in FACT_TABLES:
            rows = int(scalar(conn, f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                              bounds(day)))
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


def _bytes(conn: psycopg.Connection[Any], day: date) -> int:
    """PostgreSQL's size of the day: its partitions, or its chunks (compressed or not)."""
    storage = scalar(conn, "SELECT value FROM warehouse_meta WHERE key = 'storage'")
    if storage == "native":
        names = [f"public.{table}_p{day:%Y%m%d}" for table in FACT_TABLES]
        return int(scalar(conn, "SELECT coalesce(sum(pg_total_relation_size(to_regclass(n))), 0)"
                                " FROM unnest(%s::text[]) n WHERE to_regclass(n) IS NOT NULL", (names,)))
    start, _ = bounds(day)
    return int(scalar(conn, "SELECT coalesce(sum(s.total_bytes), 0) FROM timescaledb_information.chunks c,"
                            " LATERAL chunks_detailed_size(format('%%I.%%I', c.hypertable_schema,"
                            " c.hypertable_name)::regclass) s WHERE s.chunk_name = c.chunk_name"
                            " AND c.range_start = %s AND c.hypertable_name = ANY(%s)", (start, list(FACT_TABLES))))


def file_sha256(path: Path, *, sync: bool = False) -> str:
    """The sha256 `export_runs` records for an exported file, and verify checks again. `sync`: flush
    the file to disk too (the export's rename must not land before the data does)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        if sync:
            os.fsync(handle.fileno())
    return digest.hexdigest()
