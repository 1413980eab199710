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
the new one, never both, never half of one. Each run starts by removing what killed runs left.

Trust (issue 21): a run holds the warehouse's maintenance lock (warehouse.lifecycle.lock) from start to
end, so retention never runs beside it, on any host; it writes only to a lake tied to its database
(warehouse.lifecycle.lakes) and records through `warehouse_record_export` on the lock's session. Each
table-day is checked again under the lock: a day retention moved to the lake is never written from
PostgreSQL (its file would lose every row moved); rows that arrived for it after are merged into its
file instead — the file's rows plus the late ones, checked, recorded and moved out of PostgreSQL in
one transaction, then renamed into place (a run killed between the two is finished by the next:
`recover`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from warehouse import lake, schema
from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle import extract, lakefile, lakes, layout
from warehouse.lifecycle.lock import maintenance
from warehouse.records import ExportRun
from warehouse.store.duckdb import duckdb_connection

if TYPE_CHECKING:
    import duckdb

WORK_DIR = ".export"  # the lock and the files being written: hidden, and no reader's glob takes them
LOCK_FILE = "lock"
PARTIAL = ".partial"
# A first export or a re-export: start, written, checked, replaced, recorded. A merge of late rows
# into a day retention moved: start, written, checked, recorded (and moved out of PostgreSQL), replaced.
STEPS = ("start", "written", "checked", "replaced", "recorded")
RECORD = "SELECT warehouse_record_export(%s, %s, %s, %s, %s, %s, %s, %s)"
LOCK_TIMEOUT_MS = 2000  # a merge locks the table for a moment: never long enough to stall the collector


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
    rows: int  # written to the file (for a merge: the file's rows before, plus the late ones)
    path: Path  # the day's folder
    late: int = 0  # a merge: the rows that arrived after retention moved the day, now in its file
    in_lake: bool = False  # retention moved the day, and nothing arrived since: nothing was written


@dataclass
class Report:
    """What a run did: every table-day of its work, in order."""

    done: list[Exported] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.done if not e.in_lake)


def export_all(url: str, export_root: Path, work: list[tuple[str, date]],
               step: Callable[[str, date], None] = lambda table, day: None) -> int:
    """Export every (table, day) of `work`; the rows written. (`run` with its report.)"""
    return run(url, export_root, work, step).rows


def run(url: str, export_root: Path, work: list[tuple[str, date]],
        step: Callable[[str, date], None] = lambda table, day: None) -> Report:
    """Export every (table, day) of `work` on one DuckDB connection, holding the maintenance lock; `step`
    is called before each. A table-day whose values cannot be exported is reported (ExportError, one
    line per table-day) after every other table-day of `work` has been exported."""
    report = Report()
    failed = []
    with _session(url, export_root) as conn:
        clean(export_root)
        if not work:
            return report
        con = duckdb_connection(url)
        try:
            for table, day in work:
                step(table, day)
                try:
                    report.done.append(_one(conn, con, url, export_root, table, day))
                except ExportError as exc:
                    failed.append(str(exc))
        finally:
            con.close()
    if failed:
        raise ExportError("\n".join(failed))
    return report


def export_day(url: str, export_root: Path, table: str, day: date) -> Exported:
    """Export one table-day (again), replacing an earlier export of it (or merging its late rows)."""
    if table not in EXPORT_TABLES:
        raise ExportError(f"{table!r} is not an exported table; choose from {', '.join(EXPORT_TABLES)}")
    with _session(url, export_root) as conn:
        clean(export_root, (table,))
        con = duckdb_connection(url)
        try:
            return _one(conn, con, url, export_root, table, day)
        finally:
            con.close()


@contextlib.contextmanager
def _session(url: str, export_root: Path) -> Iterator[psycopg.Connection[Any]]:
    """The maintenance lock's session, the lake tied to this warehouse, the export directory's own lock,
    and whatever a killed run committed but did not rename, put in place."""
    with maintenance(url, "export") as conn:
        if not conn.execute("SELECT has_function_privilege('warehouse_record_export(text, date, bigint, bigint,"
                            " text, text, timestamptz, timestamptz)', 'EXECUTE')").fetchone()[0]:  # type: ignore[index]
            raise ExportError(f"{_role(conn)} may not record exports: run `warehouse export` as a login in"
                              " warehouse_maintainer (README: Roles)")
        conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
        lakes.tie(conn, export_root)
        with _exclusive(export_root):
            recover(conn, export_root)
            yield conn


def _one(conn: psycopg.Connection[Any], con: duckdb.DuckDBPyConnection, url: str, export_root: Path, table: str,
         day: date) -> Exported:
    """One table-day, as it is now (checked again under the lock): exported, merged, or in the lake."""
    moved = _retained(conn, table, day)
    if moved is None:
        return _export(conn, con, url, export_root, table, day)
    rows, path, _ = moved
    where = path or _moved_to(conn, day)  # a table without rows that day has no file: the day's other files tell
    if where is not None and not lakes.is_lake_file(export_root, *layout.table_day(where), where):
        raise ExportError(f"{table} {day} is in the lake at {where} (retention moved it out of PostgreSQL), not in"
                          f" {export_root}: export it there (--dir, or [export] dir)")
    if not extract.check_day(url, table, day).rows:
        return Exported(table, day, rows, layout.file(export_root, table, day).parent, in_lake=True)
    return _merge(conn, con, url, export_root, table, day, moved)


def _export(conn: psycopg.Connection[Any], con: duckdb.DuckDBPyConnection, url: str, export_root: Path, table: str,
            day: date) -> Exported:
    started = datetime.now(UTC)
    final = layout.file(export_root, table, day)
    folder = final.parent
    temporary = _partial(export_root, table, day)
    reached("start")
    try:
        written = _write(con, temporary, table, day)
        reached("written")
        check = _checked(url, table, day)
        if written != check.rows:
            raise ExportError(f"{table} {day}: wrote {written} rows but PostgreSQL has {check.rows}; "
                              "nothing was replaced — run the export again")
        digest = lakefile.sha256(temporary, sync=True)
        reached("checked")
        if _retained(conn, table, day) is not None:  # cannot happen under the lock: the rule, kept in one place
            raise ExportError(f"{table} {day} was moved to the lake while it was exported; nothing was replaced")
        folder.mkdir(parents=True, exist_ok=True)
        size = temporary.stat().st_size
        os.replace(temporary, final)  # the commit
        _sync_directory(folder)
        reached("replaced")
        try:
            conn.execute(RECORD, ExportRun(table, day, written, size, os.path.abspath(final), digest, started,
                                           datetime.now(UTC)))
        except psycopg.Error as exc:  # the file is not recorded: the next run exports the day again
            raise ExportError(f"{table} {day}: its export was not recorded ({_first_line(exc)})") from None
        reached("recorded")
        return Exported(table, day, written, folder)
    finally:
        temporary.unlink(missing_ok=True)


def _merge(conn: psycopg.Connection[Any], con: duckdb.DuckDBPyConnection, url: str, export_root: Path, table: str,
           day: date, moved: tuple[int, str | None, str | None]) -> Exported:
    """The rows that arrived for a day retention moved, merged into its file: the file's rows (checked
    against what retention recorded; none when the table had none that day) and the late ones,
    recorded and moved out of PostgreSQL in one transaction, then renamed into place."""
    started = datetime.now(UTC)
    final = layout.file(export_root, table, day)
    temporary = _partial(export_root, table, day)
    kept, path, digest = moved
    if path is not None:
        found = lakefile.facts(final)
        if found is None or found.rows != kept or lakefile.sha256(final) != digest:
            raise ExportError(f"{table} {day}: the lake's file {final} is not the one retention recorded"
                              f" ({kept:,} rows), so its late rows were not merged; run"
                              f" `warehouse verify-lake --day {day}`")
    reached("start")
    try:
        written = _write(con, temporary, table, day, merge_with=final if path is not None else None)
        reached("written")
        late = _checked(url, table, day).rows
        if written != kept + late or written < kept:
            raise ExportError(f"{table} {day}: wrote {written:,} rows, not the {kept:,} of its file plus the {late:,}"
                              " that arrived since; nothing was replaced — run the export again")
        digest = lakefile.sha256(temporary, sync=True)
        reached("checked")
        final_path = os.path.abspath(final)
        try:
            with conn.transaction():  # the commit: recorded and out of PostgreSQL together, or neither
                conn.execute(RECORD, ExportRun(table, day, written, temporary.stat().st_size, final_path, digest,
                                               started, datetime.now(UTC)))
                conn.execute("SELECT warehouse_drop_day(%s, %s::jsonb)", (day, orjson.dumps(
                    {table: {"rows": late, "path": final_path, "sha256": digest}}).decode()))
        except psycopg.Error as exc:
            raise ExportError(f"{table} {day}: its {late:,} late rows were not merged ({_first_line(exc)});"
                              " nothing was replaced — run the export again") from None
        reached("recorded")
        os.replace(temporary, final)
        _sync_directory(final.parent)
        reached("replaced")
        return Exported(table, day, written, final.parent, late=late)
    finally:
        temporary.unlink(missing_ok=True)


def _write(con: duckdb.DuckDBPyConnection, temporary: Path, table: str, day: date,
           merge_with: Path | None = None) -> int:
    """The table-day's rows from PostgreSQL (and those of `merge_with`, a file of the lake), sorted, to
    `temporary`; the rows written."""
    (threads,) = con.execute("SELECT current_setting('threads')").fetchone() or (1,)
    rows = f"SELECT * FROM {extract.day_rows(table, day, slices=min(int(threads), 8))}"  # a slice per thread
    if merge_with is not None:  # files exported before a column was added read as null in it
        both = f"({rows}) UNION ALL BY NAME (SELECT * FROM read_parquet('{_literal(merge_with)}'))"
        rows = f"SELECT {', '.join(f'CAST({n} AS {t}) AS {n}' for n, t in lake.columns(table))} FROM ({both})"
    (written,) = con.execute(
        f"COPY ({rows} ORDER BY {schema.SORT_KEYS[table]})"
        f" TO '{_literal(temporary)}' (FORMAT parquet, COMPRESSION zstd)").fetchone() or (None,)  # rows written
    return int(written or 0)


def _checked(url: str, table: str, day: date) -> extract.DayCheck:
    """PostgreSQL's count of the table-day now, or ExportError when a value cannot be exported exactly."""
    check = extract.check_day(url, table, day)
    if check.unfit is not None:
        column, value, limit = check.unfit
        raise ExportError(
            f"{table} {day}: {column} = {value} cannot be exported exactly (the lake holds {limit}), so the"
            " day was not exported; the row did not come through a feed adapter (they refuse such values):"
            " correct or remove it as the table's owner, then export again")
    return check


def _retained(conn: psycopg.Connection[Any], table: str, day: date) -> tuple[int, str | None, str | None] | None:
    """(rows, path, sha256) of the table-day in the lake when retention moved it out of PostgreSQL (path
    None: the table had no rows that day, and no file), else None."""
    row = conn.execute("SELECT rows, path, sha256 FROM retention_runs WHERE table_name = %s AND day = %s"
                       " ORDER BY dropped_at DESC, id DESC LIMIT 1", (table, day)).fetchone()
    return (int(row[0]), row[1], row[2]) if row else None


def _moved_to(conn: psycopg.Connection[Any], day: date) -> str | None:
    """A file of `day` retention recorded (any table's): where the day lives."""
    row = conn.execute("SELECT path FROM retention_runs WHERE day = %s AND path IS NOT NULL LIMIT 1", (day,)).fetchone()
    return str(row[0]) if row else None


def recover(conn: psycopg.Connection[Any], export_root: Path) -> list[Path]:
    """Put in place what a killed merge committed but did not rename: a file being written whose sha256
    is the one retention recorded last for its table-day (call with both locks held). Returns them."""
    done = []
    for entry in sorted((export_root / WORK_DIR).glob(f"*{PARTIAL}")):
        table, _, rest = entry.name.partition(".")
        try:
            day = date.fromisoformat(rest.split(".")[0])
        except ValueError:
            continue
        if table not in EXPORT_TABLES:
            continue
        moved = _retained(conn, table, day)
        if moved is None or moved[1] is None or not lakes.is_lake_file(export_root, table, day, moved[1]):
            continue
        final, digest = layout.file(export_root, table, day), moved[2]
        if lakefile.sha256(entry) == digest and (not final.exists() or lakefile.sha256(final) != digest):
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(entry, final)
            _sync_directory(final.parent)
            done.append(final)
    return done


def clean(export_root: Path, tables: tuple[str, ...] = EXPORT_TABLES) -> list[Path]:
    """Remove what killed runs left (call with the export lock held, after `recover`): files being
    written, day folders made but never filled, and the earlier layout's leftovers. Returns what it
    removed or put back."""
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
    """One export at a time per export directory (whatever database it exports): what a run finds
    half-written is then a killed run's."""
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


def _partial(export_root: Path, table: str, day: date) -> Path:
    return export_root / WORK_DIR / f"{table}.{day.isoformat()}.{os.getpid()}{PARTIAL}"


def _role(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return f"role {row[0]}" if row else "this role"


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()).removeprefix("odds-warehouse: ")[:300]


def _literal(path: Path) -> str:
    return str(path).replace("'", "''")


def _sync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
