"""`warehouse verify-lake`: the lake read again, every table-day compared with what was recorded of it
(issue 26 item 8) — the file of the latest `export_runs` row in this lake (or, for a day retention
moved, of the latest `retention_runs` row): it exists, has the size recorded, its Parquet footer
counts the rows recorded, and it hashes to the sha256 recorded; and every file of the lake is one a
record names. `problems()` is the API (`warehouse check` and metrics build on it); the command prints
one line per problem.

A table-day that an export or retention is changing at that moment may look wrong for an instant: it
is looked at again once no export or retention runs (warehouse.lifecycle.lock.shared).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle import lakefile, lakes, layout
from warehouse.lifecycle.lock import shared

SECOND_LOOK_WAIT_S = 60.0
_LATEST = ("SELECT DISTINCT ON (table_name, day) table_name, day, rows, bytes, path, sha256 FROM {table}"
           " {where} ORDER BY table_name, day, {at} DESC, id DESC")


@dataclass(frozen=True)
class Record:
    table: str
    day: date
    rows: int
    bytes: int | None  # null for records made before migration 0009
    path: str | None
    sha256: str | None
    moved: bool  # a retention_runs row: the day lives in the lake only


@dataclass(frozen=True)
class Problem:
    table: str
    day: date | None  # None: a file that is no table-day of the lake's layout
    what: str

    def __str__(self) -> str:
        return f"{self.table} {self.day or ''}: {self.what}".replace("  ", " ")


@dataclass(frozen=True)
class Audit:
    problems: list[Problem]
    table_days: int  # compared
    rows: int  # recorded in the files compared
    bytes: int  # their size


def problems(url: str, lake: Path, day: date | None = None) -> Audit:
    """Every table-day recorded in `lake` (or only `day`'s) compared with its file, and the lake's files
    with the records. Problems seen while an export or retention runs are looked at once more after."""
    with psycopg.connect(url, autocommit=True) as conn:
        if lake.is_dir():
            lakes.tie(conn, lake)
        records = _records(conn, lake, day)
    found = _compare(records, lake, day)
    if found.problems:
        with shared(url, SECOND_LOOK_WAIT_S), psycopg.connect(url, autocommit=True) as conn:
            found = _compare(_records(conn, lake, day), lake, day)
    return found


def _records(conn: psycopg.Connection[Any], lake: Path, day: date | None) -> dict[tuple[str, date], Record]:
    """Per table-day, what its file in `lake` must be: the latest retention row (the day lives in the lake
    only), else the latest export into this lake."""
    where, params = ("WHERE day = %s", (day,)) if day else ("", ())
    chosen: dict[tuple[str, date], Record] = {}
    for table, one_day, rows, size, path, digest in conn.execute(
            _LATEST.format(table="export_runs", where=where, at="finished_at"), params).fetchall():
        if lakes.is_lake_file(lake, table, one_day, path):
            chosen[(table, one_day)] = Record(table, one_day, rows, size, path, digest, False)
    for table, one_day, rows, size, path, digest in conn.execute(
            _LATEST.format(table="retention_runs", where=where, at="dropped_at"), params).fetchall():
        chosen[(table, one_day)] = Record(table, one_day, rows, size, path, digest, True)
    return chosen


def _compare(records: dict[tuple[str, date], Record], lake: Path, day: date | None) -> Audit:
    found: list[Problem] = []
    rows = size = 0
    for (table, one_day), record in sorted(records.items()):
        if record.path is None:  # moved with no rows and no file: nothing to read
            continue
        problem = _check(record, lake)
        if problem is None:
            rows += record.rows
            size += record.bytes or 0
        else:
            found.append(Problem(table, one_day, problem))
    for table in EXPORT_TABLES:  # files no record names: not this warehouse's, or never committed
        for path in layout.files(lake, table):
            held = layout.day_of(path)
            if (day is None or held == day) and (held is None or (table, held) not in records):
                found.append(Problem(table, held, f"{path} is in the lake but no export of this warehouse"
                                                  " recorded it"))
    return Audit(found, len(records), rows, size)


def _check(record: Record, lake: Path) -> str | None:
    assert record.path is not None
    if not lakes.is_lake_file(lake, record.table, record.day, record.path):
        return f"retention moved the day to {record.path}, outside the lake {lake}"
    facts = lakefile.facts(record.path)
    if facts is None:
        return f"{record.path} is missing" + (" (the day lives in the lake only)" if record.moved else "")
    if record.bytes is not None and facts.bytes != record.bytes:
        return f"{record.path} has {facts.bytes:,} bytes, not the {record.bytes:,} recorded"
    if facts.rows != record.rows:
        counted = "no Parquet footer" if facts.rows is None else f"{facts.rows:,} rows by its footer"
        return f"{record.path} has {counted}, not the {record.rows:,} recorded"
    if lakefile.sha256(record.path) != record.sha256:
        return f"{record.path} does not hash to the sha256 recorded"
    return None
