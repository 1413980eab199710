"""PostgreSQL → Parquet, one table-day at a time: the file, checked, committed and recorded in
`export_runs`. (The rows and their check come from warehouse.lifecycle.extract; which table-days,
from warehouse.lifecycle.pending; where the file goes, from warehouse.lifecycle.layout.)

Each table-day is one zstd file, rows sorted so that one fixture/market's history is contiguous,
written even when the day has no rows (the full schema, zero rows); types: warehouse.lake and
docs/parquet.md.

Crash safety: the file is written to `<export dir>/.export/<table>.<day>.<pid>.partial`, outside
every table's folder (polars refuses a folder holding any other file, even a hidden one), checked
(row count and values against PostgreSQL), flushed to disk, then renamed over the day's file with one
os.replace: the commit. Whatever moment a run is killed at, a reader sees the day's previous file or
the new one, never both, never half of one. One run at a time writes to an export directory
(`.export/lock`), and each run starts by removing what killed runs left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from warehouse import schema
from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle import extract, layout
from warehouse.lifecycle.verify import file_sha256
from warehouse.records import ExportRun
from warehouse.store.duckdb import duckdb_connection

if TYPE_CHECKING:
    import duckdb

WORK_DIR = ".export"  # the lock and the files being written: hidden, and no reader's glob takes them
LOCK_FILE = "lock"
PARTIAL = ".partial"
STEPS = ("start", "written", "checked", "replaced", "recorded")


def _carry_on(step: str) -> None:
    pass


# Called as each table-day reaches each of STEPS. Nothing in the product sets it: the crash tests do,
# to stop a real `warehouse export` process at a step and kill it there (tests/paused_export.py).
reached: Callable[[str], None] = _carry_on


class ExportError(RuntimeError):
    """A table-day cannot be exported as it is; the message (one line each) says which and what to do."""


@dataclass(frozen=True)
class Exported:
    table: str
    day: date
    rows: int
    path: Path  # the day's folder


def export_all(url: str, export_root: Path, work: list[tuple[str, date]],
               step: Callable[[str, date], None] = lambda table, day: None) -> int:
    """Export every (table, day) of `work` on one DuckDB connection; `step` is called before each.
    Returns the rows written. A table-day whose values cannot be exported is reported (ExportError,
    one line per table-day) after every other table-day of `work` has been exported."""
    with _exclusive(export_root):
        clean(export_root)
        if not work:
            return 0
        rows = 0
        failed = []
        con = duckdb_connection(url)
        try:
            for table, day in work:
                step(table, day)
                try:
                    rows += _export(con, url, export_root, table, day).rows
                except ExportError as exc:
                    failed.append(str(exc))
        finally:
            con.close()
    if failed:
        raise ExportError("\n".join(failed))
    return rows


def export_day(url: str, export_root: Path, table: str, day: date) -> Exported:
    """Export one table-day (again), replacing an earlier export of it."""
    if table not in EXPORT_TABLES:
        raise ExportError(f"{table!r} is not an exported table; choose from {', '.join(EXPORT_TABLES)}")
    with _exclusive(export_root):
        clean(export_root, (table,))
        con = duckdb_connection(url)
        try:
            return _export(con, url, export_root, table, day)
        finally:
            con.close()


def _export(con: duckdb.DuckDBPyConnection, url: str, export_root: Path, table: str, day: date) -> Exported:
    started = datetime.now(UTC)
    final = layout.file(export_root, table, day)
    folder = final.parent
    temporary = export_root / WORK_DIR / f"{table}.{day.isoformat()}.{os.getpid()}{PARTIAL}"
    reached("start")
    try:
        (threads,) = con.execute("SELECT current_setting('threads')").fetchone() or (1,)
        rows = extract.day_rows(table, day, slices=min(int(threads), 8))  # a slice of the day per thread
        (written,) = con.execute(
            f"COPY (SELECT * FROM {rows} ORDER BY {schema.SORT_KEYS[table]})"
            f" TO '{_literal(temporary)}' (FORMAT parquet, COMPRESSION zstd)").fetchone() or (None,)  # rows written
        reached("written")
        check = extract.check_day(url, table, day)
        if check.unfit is not None:
            column, value, limit = check.unfit
            raise ExportError(
                f"{table} {day}: {column} = {value} cannot be exported exactly (the lake holds {limit}), so the"
                " day was not exported; the row did not come through a feed adapter (they refuse such values):"
                " correct or remove it as the table's owner, then export again")
        if written != check.rows:
            raise ExportError(f"{table} {day}: wrote {written} rows but PostgreSQL has {check.rows}; "
                              "nothing was replaced — run the export again")
        digest = file_sha256(temporary, sync=True)
        reached("checked")
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, final)  # the commit
        _sync_directory(folder)
        reached("replaced")
        _record(url, ExportRun(table, day, written, final.stat().st_size, str(final), digest, started,
                               datetime.now(UTC)))
        reached("recorded")
        return Exported(table, day, written, folder)
    finally:
        temporary.unlink(missing_ok=True)


def clean(export_root: Path, tables: tuple[str, ...] = EXPORT_TABLES) -> list[Path]:
    """Remove what killed runs left (call with the export lock held): files being written, day folders
    made but never filled, and the earlier layout's leftovers. Returns what it removed or put back."""
    touched = [entry for entry in (export_root / WORK_DIR).iterdir() if entry.name != LOCK_FILE]
    for entry in touched:  # files being written (and anything DuckDB wrote beside one)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    for table in tables:
        touched += _clean_folder_swap_layout(export_root, table)
        for folder in layout.day_folders(export_root, table):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
    return touched


# Remove on or after 2027-03-01 (or at version 0.2.0, if sooner), with its test in test_export_crash.py:
# the folder-swap layout was replaced on 2026-11-30, and the first run of this one cleans a directory.
def _clean_folder_swap_layout(export_root: Path, table: str) -> list[Path]:
    """The earlier layout's `.day=D.tmp-<pid>` folders (removed) and `day=D.old-<pid>` folders (put back
    as the day's file when that is missing: the run was killed between its two renames)."""
    directory = layout.folder(export_root, table)
    if not directory.is_dir():
        return []
    touched = []
    for entry in sorted(directory.iterdir()):
        name = entry.name
        if name.startswith(".day=") and ".tmp-" in name:
            shutil.rmtree(entry, ignore_errors=True)
            touched.append(entry)
        elif name.startswith("day=") and ".old-" in name:
            day = layout.day_of(entry.with_name(name.split(".old-")[0]))
            current = layout.file(export_root, table, day) if day else None
            if current and not current.exists() and (entry / layout.PART_FILE).exists():
                current.parent.mkdir(exist_ok=True)
                os.replace(entry / layout.PART_FILE, current)
            shutil.rmtree(entry, ignore_errors=True)
            touched.append(entry)
    return touched


@contextlib.contextmanager
def _exclusive(export_root: Path) -> Iterator[None]:
    """One export at a time per export directory: what a run finds half-written is then a killed run's."""
    (export_root / WORK_DIR).mkdir(parents=True, exist_ok=True)
    with open(export_root / WORK_DIR / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"another `warehouse export` is writing to {export_root}; "
                              "wait for it to finish, then run this one again") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record(url: str, run: ExportRun) -> None:
    """Record one exported table-day in `export_runs` (what retention verifies a day against)."""
    columns = ", ".join(ExportRun._fields)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO export_runs ({columns}) VALUES ({', '.join(['%s'] * len(run))})", run)


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")


def _sync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
