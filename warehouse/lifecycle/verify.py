"""Whether a UTC day may leave PostgreSQL: every table-day with rows to drop has a verified export — the
latest `export_runs` row names the lake's own file of it (warehouse.lifecycle.lakes; not a copy
elsewhere), the file is there, its Parquet footer counts the rows recorded, it hashes to the sha256
recorded, and it holds every row: those PostgreSQL has now plus those retention moved to the lake
before (late rows of a day already moved: `warehouse export --day D` merges them into its file).
A table with no rows that day and no export has nothing to lose.

What keeps a day is one of two kinds: not exported (again) yet — the nightly export does it — or a
file that fails a check, which a person must look at (`Verdict.pending` tells them apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from warehouse.lifecycle import lakefile, lakes
from warehouse.lifecycle.days import bounds
from warehouse.schema import FACT_TABLES
from warehouse.store.database import scalar

# The latest export and the latest retention of each table of a day (rows moved before: 0 if none).
_RECORDS = ("SELECT t.name, e.rows, e.path, e.sha256, coalesce(r.rows, 0), r.table_name IS NOT NULL"
            " FROM unnest(%s::text[]) AS t(name)"
            " LEFT JOIN LATERAL (SELECT rows, path, sha256 FROM export_runs WHERE table_name = t.name AND day = %s"
            "                    ORDER BY finished_at DESC, id DESC LIMIT 1) e ON true"
            " LEFT JOIN LATERAL (SELECT table_name, rows FROM retention_runs WHERE table_name = t.name AND day = %s"
            "                    ORDER BY dropped_at DESC, id DESC LIMIT 1) r ON true")


@dataclass(frozen=True)
class TableDay:
    table: str
    rows: int  # in PostgreSQL now: what dropping the day removes
    path: str | None = None  # of the latest export, when there is one
    sha256: str | None = None


@dataclass
class Verdict:
    """One day: droppable (every table verified) or kept, with the reason."""

    day: date
    tables: list[TableDay] = field(default_factory=list)
    problem: str | None = None
    pending: bool = False  # the problem is only that the day is not exported (again) yet
    bytes: int = 0  # what PostgreSQL holds for the day (tables and indexes), freed by dropping it
    moved: bool = False  # retention moved the day to the lake before: what is left are late rows

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def expected(self) -> dict[str, dict[str, Any]]:
        """What warehouse_drop_day is given: per table, the rows to drop and the export verified. For a
        day moved before, only the tables with late rows (the others are in the lake already)."""
        return {t.table: {"rows": t.rows, "path": t.path, "sha256": t.sha256}
                for t in self.tables if t.rows or not self.moved}


def verify(conn: psycopg.Connection[Any], day: date, lake: Path, *, hash_file: bool = True) -> Verdict:
    """Whether `day` may be dropped now, and what it holds; the files are trusted only in `lake`."""
    verdict = Verdict(day)
    for table, exported_rows, path, digest, moved, was_moved in conn.execute(
            _RECORDS, (list(FACT_TABLES), day, day)).fetchall():
        rows = int(scalar(conn, f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                          bounds(day)))
        verdict.moved |= was_moved
        verdict.tables.append(TableDay(table, rows, path, digest))
        if verdict.problem is None:
            found = _problem(table, day, lake, rows, moved, exported_rows, path, digest, hash_file)
            if found is not None:
                verdict.problem, verdict.pending = found
    verdict.bytes = _bytes(conn, day)
    return verdict


def _problem(table: str, day: date, lake: Path, rows: int, moved: int, exported_rows: int | None,
             path: str | None, digest: str | None, hash_file: bool) -> tuple[str, bool] | None:
    """What keeps the table-day, and whether it is only not exported (again) yet; None when nothing does."""
    if rows == 0 and (moved or path is None):
        return None  # nothing to drop; or nothing to lose
    if path is None or exported_rows is None or digest is None:
        return f"{table} has {rows:,} rows and was never exported", True
    if moved and exported_rows != moved + rows:
        return (f"{table} has {rows:,} rows that arrived after retention moved the day to the lake (merge them"
                " into its file)"), True
    if exported_rows != moved + rows:
        return f"{table} was exported with {exported_rows:,} rows but PostgreSQL has {rows:,} now (late rows?)", True
    if not lakes.is_lake_file(lake, table, day, path):
        return f"{table}'s latest export is {path}, not the lake's file (the lake is {lake})", True
    found = lakefile.facts(path)
    if found is None:
        return f"{table}'s export {path} is missing", False
    if found.rows != exported_rows:
        counted = "no Parquet footer" if found.rows is None else f"{found.rows:,} rows by its footer"
        return f"{table}'s export {path} has {counted}, not the {exported_rows:,} export_runs recorded", False
    if hash_file and lakefile.sha256(path) != digest:
        return f"{table}'s export {path} no longer matches the sha256 export_runs recorded", False
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
