"""One query surface over hot and cold days: DuckDB, with the same tables and relations as PostgreSQL.

    from warehouse import analysis
    con = analysis.connect()                        # the configured database, and the days retention moved out
    con.sql("SELECT * FROM price_history WHERE fixture_id = 'id1000' AND market_id = '101'").df()
    con = analysis.connect(export_dir="exports")    # the Parquet export alone (no database)
    con = analysis.connect(export_dir="s3://bucket/odds")  # … in a bucket, read in place (the AWS variables)

Each fact table is a view: the hot rows — every row still in PostgreSQL, read through the
`warehouse_lake` views, which hand DuckDB the lake's exact types and take its filters (a text equality
reaches PostgreSQL's index only written as an IN list: statement.indexable, which Engine applies) — plus
the cold files. Over the warehouse the cold files are the table-days retention
dropped (their `retention_runs` rows name them); a day is in PostgreSQL until retention drops it, and
retention drops it only after its export was verified, so every row is read from exactly one place
(rows that arrive for a day after it was dropped stay in PostgreSQL, and are read there). Over an
export alone there are no hot rows, every file of the lake is cold, and the tables carry the hive
`day` column (a DATE) as the lake's readers see it. Columns are the lake's (warehouse.lake): exact
decimals, JSON and UUIDs as text; files exported before a column was added (e.g. `origin`,
migration 0007) read as null in it. The analysis relations (warehouse.analysis.relations) are DuckDB
views and macros over these tables.

The cold files are found and checked again by every query that reads their table (`warehouse_cold`,
called as DuckDB binds the query): a day retention drops while a connection is open is read from its
file by the next query, and a file that is missing, of another size or another row count than
retention recorded, or no readable Parquet, fails the queries on its table with one line naming the
table-day — queries on other tables run. The connection reads no file outside the lake, attaches and
loads nothing, and cannot change its settings (store.duckdb.lock_down); docs/reliability.md. A lake in a
bucket is read in place through DuckDB's httpfs, its objects checked the same way (a HEAD, and the footer
read again only when the object changed: warehouse.lifecycle.storage).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warehouse import lake
from warehouse.analysis import relations
from warehouse.lifecycle import lakefile, layout

if TYPE_CHECKING:
    from warehouse.lifecycle.bucket import Settings
    from warehouse.lifecycle.storage import BucketLake, Lake

APPLICATION_NAME = "warehouse query surface"  # its sessions in pg_stat_activity: who holds what, for retain
COLD = "warehouse_cold"  # the function the views call for the SQL of a table's cold files


@dataclass(frozen=True)
class ColdDay:
    """One table-day read from its Parquet file, and what its file must be (None: nothing recorded)."""

    day: date
    path: str
    rows: int | None = None
    bytes: int | None = None
    unreadable: str | None = None  # why this connection cannot read the file at all


def connect(url: str | None = None, export_dir: str | Path | Lake | None = None,
            settings: Settings | None = None) -> Any:
    """A DuckDB connection over the warehouse: `url` (default: the configured database, as every command
    finds it) and the Parquet files of the days retention dropped — under `export_dir` when given (an
    export moved or mounted elsewhere), else where retention recorded them. With only `export_dir`,
    the Parquet export alone. A lake in a bucket (`s3://BUCKET/PREFIX`) is reached with `settings`
    (default: the AWS variables)."""
    from warehouse.lifecycle.storage import open_lake
    from warehouse.store.duckdb import connection, lock_down

    if url is None and export_dir is not None:
        found = open_lake(export_dir, settings)
        con = connection()
        con.execute("SET TimeZone = 'UTC'")
        lakes = Lakes([found], con)
        build(con, hot=None, cold=lambda table: lakes.checked(
            [ColdDay(d, where) for where in found.locations(table) if (d := layout.day_of(Path(where))) is not None]),
            day=True, facts=lakes.facts)
        lock_down(con, lakes.directories)
        return con
    from warehouse.store.database import resolve_database_url
    from warehouse.store.duckdb import ATTACHED, duckdb_connection

    url = resolve_database_url(url)  # a URL given here is normalised as --database-url is
    con = duckdb_connection(url, APPLICATION_NAME)
    retained = Retained(url, open_lake(export_dir, settings) if export_dir is not None else None)
    weakref.finalize(con, retained.close)  # its session ends with the connection
    lakes = Lakes([open_lake(root, settings) for root in retained.lakes()], con)
    build(con, hot=ATTACHED, cold=lambda table: lakes.checked(retained.days(table)), facts=lakes.facts)
    lock_down(con, lakes.directories)
    return con


class Lakes:
    """The lakes a surface reads from, fixed when it opens (DuckDB's allowed_directories): each local
    lake root as given and as the filesystem resolves it, and wherever its linked table or day
    folders lead — DuckDB resolves a link before it checks a path; each bucket's prefix (its httpfs
    settings given to `con` here, before the connection is locked)."""

    def __init__(self, found: list[Lake], con: Any) -> None:
        from warehouse.lifecycle.storage import BucketLake, Directory

        self.buckets = [one for one in found if isinstance(one, BucketLake)]
        folders: set[str] = set()
        for root in (one.path for one in found if isinstance(one, Directory)):
            folders |= {os.path.abspath(root), os.path.realpath(root)}
            for table in lake.EXPORT_TABLES:
                linked = [layout.folder(root, table), *layout.day_folders(root, table)]
                folders |= {os.path.realpath(folder) for folder in linked if folder.is_symlink()}
        for bucket in self.buckets:
            bucket.prepare(con)
        self.directories: list[Path | str] = [*sorted(Path(folder) for folder in folders),
                                              *(str(bucket.root) for bucket in self.buckets)]

    def facts(self, where: str) -> lakefile.Facts | None:
        """A cold file's size and footer rows, cheaply: a stat, or a HEAD for an object (the footer read
        again only when it changed)."""
        bucket = self._bucket(where)
        return bucket.current(where) if bucket is not None else lakefile.current(where)

    def _bucket(self, where: str) -> BucketLake | None:
        """The bucket lake `where` (an object's URL) is in; None for a local file."""
        return next((bucket for bucket in self.buckets if where.startswith(f"{bucket.root}/")), None)

    def checked(self, days: list[ColdDay]) -> list[ColdDay]:
        """`days`, each file the connection cannot reach marked so (instead of DuckDB's permission error)."""
        return [day if self._reaches(day.path) else replace(
            day, unreadable=f"its file {day.path} is outside the lake directories this connection was opened on"
            " (it was moved or linked there since): open a new connection") for day in days]

    def _reaches(self, path: str) -> bool:
        if self._bucket(path) is not None:
            return True
        real = os.path.realpath(path)
        return any(real.startswith(str(folder).rstrip(os.sep) + os.sep) for folder in self.directories)


class Retained:
    """The days retention moved out of PostgreSQL, per table, read from `retention_runs` at each call:
    their files (under `moved`, when the lake was moved or mounted elsewhere) and their recorded rows
    and size. One autocommit session of its own (never in a transaction between calls; a DuckDB read
    of the attached database costs ~100× more per query), closed with `close`."""

    def __init__(self, url: str, moved: Lake | None) -> None:
        self.url, self.moved = url, moved
        self._conn: Any = None
        self._lock = threading.Lock()  # one query at a time on the session, whichever query's binding asks

    def days(self, table: str) -> list[ColdDay]:
        rows = self._query("SELECT DISTINCT ON (day) day, path, rows, bytes FROM retention_runs WHERE table_name = %s"
                           " AND path IS NOT NULL ORDER BY day, dropped_at DESC, id DESC", (table,))
        return [ColdDay(day, self.moved.location(table, day) if self.moved else path, recorded, size)
                for day, path, recorded, size in rows]

    def lakes(self) -> list[Lake | Path | str]:
        """`moved`, else every lake the warehouse exported to (retention moves a day into its latest
        export's file)."""
        if self.moved is not None:
            return [self.moved]
        paths = self._query("SELECT path FROM export_runs UNION SELECT path FROM retention_runs"
                            " WHERE path IS NOT NULL", ())
        return sorted({layout.root_of_location(path) for (path,) in paths}, key=str)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        from warehouse.store.duckdb import libpq_dsn

        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(libpq_dsn(self.url, APPLICATION_NAME), autocommit=True)
                    return list(self._conn.execute(sql, params).fetchall())
                except psycopg.OperationalError:
                    self._conn = None  # the server restarted, or ended the session: once more, anew
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")


def build(con: Any, *, hot: str | None, cold: Callable[[str], list[ColdDay]] | None, day: bool = False,
          facts: Callable[[str], lakefile.Facts | None] = lakefile.current) -> Any:
    """Make `con` the query surface: each fact table the union of its hot rows (the `warehouse_lake`
    views of the PostgreSQL attached to `con` as catalog `hot`; none when None) and its cold Parquet
    files (`cold(table)`, asked again at every query that reads the table, each file checked first with
    `facts`);
    `day`: with the hive `day` column of the files (for a surface without hot rows). Then the
    analysis relations over them. Returns `con`."""
    # DuckDB 1.5's common-subplan optimizer breaks arbitrage_windows over observed_ticks (migration
    # 0016: a window under windows, read twice): an internal binder error on a surface of Parquet alone.
    con.execute("SET disabled_optimizers = 'common_subplan'")
    if cold is not None:
        con.create_function(COLD, lambda table: cold_sql(table, cold(table), day, facts), ["VARCHAR"], "VARCHAR",
                            side_effects=True)
    for table in lake.EXPORT_TABLES:
        columns = [*lake.columns(table), *([("day", "DATE")] if day else [])]
        parts = []
        if hot is not None:
            held = {name for name, _ in lake.columns(table)}
            parts.append(f"SELECT {_select(columns, held)} FROM {hot}.warehouse_lake.{table}")
        if cold is not None:
            parts.append(f"SELECT * FROM query({COLD}('{table}'))")
        else:  # nothing anywhere: no rows, the columns all the same
            parts.append(f"SELECT {_select(columns, set())} WHERE false")
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {' UNION ALL '.join(parts)}")
    for relation in relations.CURRENT:
        con.execute(relations.duckdb_ddl(relation))
    con.execute("CREATE OR REPLACE VIEW price_candles_1m AS SELECT * FROM price_candles(INTERVAL '1 minute')")
    return con


def cold_sql(table: str, days: list[ColdDay], day: bool = False,
             facts: Callable[[str], lakefile.Facts | None] = lakefile.current) -> str:
    """The SQL of a table's cold rows: its files, each checked first; a file failing its check makes it
    SQL that fails every query reading the table, with one line naming the table-day."""
    columns = [*lake.columns(table), *([("day", "DATE")] if day else [])]
    if not days:
        return f"SELECT {_select(columns, set())} WHERE false"
    failing = [(cold, problem) for cold in days if (problem := check(cold, facts)) is not None]
    if failing:
        (first, problem), others = failing[0], len(failing) - 1
        more = f" ({others} more day(s) of {table} fail too)" if others else ""
        message = f"{table} {first.day}: {problem}{more}"
        # The error is evaluated by every query reading the table, whatever it filters or counts (a column
        # of constants would let a filter prune the failing part unread, and count(*) never read it).
        fails = ", ".join(f"CAST(failed AS {kind}) AS {name}" for name, kind in columns)
        return (f"SELECT {fails} FROM (SELECT CAST(error({_literal(message)}) AS VARCHAR) AS failed)"
                " WHERE failed IS NULL")
    listed = ", ".join(_literal(cold.path) for cold in days)
    hive = ", hive_partitioning = true, hive_types = {'day': DATE}" if day else ", hive_partitioning = false"
    # UNION BY NAME with a typed empty row: a column no file has yet (exported before it existed) is null.
    typed = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in columns)
    return (f"SELECT {_select(columns, {name for name, _ in columns})} FROM (SELECT * FROM read_parquet([{listed}]"
            f"{hive}) UNION ALL BY NAME SELECT {typed} WHERE false)")


def check(cold: ColdDay, facts: Callable[[str], lakefile.Facts | None] = lakefile.current) -> str | None:
    """What is wrong with a cold file, and what to do, or None: it exists, has the size and the row
    count recorded, and its footer reads. (A file of the same size and row count holding other values
    is not seen here: `warehouse verify-lake` hashes every byte.)"""
    if cold.unreadable is not None:
        return cold.unreadable
    from warehouse.lifecycle.bucket import BucketError

    try:
        found = facts(cold.path)
    except BucketError as exc:
        return f"its object {cold.path} cannot be checked: {exc} (queries on other tables run)"
    if found is None:
        wrong = "is missing"
    elif cold.bytes is not None and found.bytes != cold.bytes:
        wrong = f"is {found.bytes:,} bytes, not the {cold.bytes:,} recorded when it was exported"
    elif found.rows is None:
        wrong = "is not a readable Parquet file (truncated or damaged)"
    elif cold.rows is not None and found.rows != cold.rows:
        wrong = f"holds {found.rows:,} rows, not the {cold.rows:,} recorded when it was exported"
    else:
        return None
    remedy = ("it is the day's only copy: restore it from a backup of the lake" if cold.rows is not None else
              f"export the day again (warehouse export --day {cold.day}) or restore it from a backup")
    return f"its file {cold.path} {wrong}; {remedy} (queries on other tables run)"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _select(columns: list[tuple[str, str]], present: set[str]) -> str:
    """Each column in its lake type, null where the source lacks it."""
    return ", ".join(f"CAST({name if name in present else 'NULL'} AS {kind}) AS {name}" for name, kind in columns)
