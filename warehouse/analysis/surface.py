"""One query surface over hot and cold days: DuckDB, with the same tables and relations as PostgreSQL.

    from warehouse import analysis
    con = analysis.connect()                        # the configured database, and the days retention moved out
    con.sql("SELECT * FROM price_history WHERE fixture_id = 'id1000' AND market_id = '101'").df()
    con = analysis.connect(export_dir="exports")    # the Parquet export alone (no database)

Each fact table is a view: the hot rows — every row still in PostgreSQL, read through the
`warehouse_lake` views, which hand DuckDB the lake's exact types and take its filters (an index lookup
stays one) — plus the cold files. Over the warehouse the cold files are the table-days retention
dropped (their `retention_runs` rows name them); a day is in PostgreSQL until retention drops it, and
retention drops it only after its export was verified, so every row is read from exactly one place
(rows that arrive for a day after it was dropped stay in PostgreSQL, and are read there). Over an
export alone there are no hot rows, every file of the lake is cold, and the tables carry the hive
`day` column (a DATE) as the lake's readers see it. Columns are the lake's (warehouse.lake): exact
decimals, JSON and UUIDs as text; files exported before a column was added (e.g. `origin`,
migration 0007) read as null in it. The analysis relations (warehouse.analysis.relations) are DuckDB
views and macros over these tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warehouse import lake
from warehouse.analysis import relations
from warehouse.lifecycle import layout


def connect(url: str | None = None, export_dir: str | Path | None = None) -> Any:
    """A DuckDB connection over the warehouse: `url` (default: the configured database, as every command
    finds it) and the Parquet files of the days retention dropped — under `export_dir` when given (an
    export moved or mounted elsewhere), else where retention recorded them. With only `export_dir`,
    the Parquet export alone."""
    if url is None and export_dir is not None:
        import duckdb

        root = Path(export_dir).expanduser()
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        # a glob, not today's files: DuckDB expands it at each query, so later exports are seen
        cold = {table: [layout.glob(root, table)] for table in lake.EXPORT_TABLES if layout.files(root, table)}
        return build(con, hot=None, cold=cold, day=True)
    from warehouse.lifecycle.retention import retained_files
    from warehouse.store.database import resolve_database_url
    from warehouse.store.duckdb import ATTACHED, duckdb_connection

    url = url or resolve_database_url()
    con = duckdb_connection(url)
    moved = Path(export_dir).expanduser() if export_dir is not None else None
    cold = {table: [str(layout.file(moved, table, day)) if moved else path for day, path in days]
            for table, days in retained_files(url).items()}
    return build(con, hot=ATTACHED, cold=cold)


def build(con: Any, *, hot: str | None, cold: Mapping[str, Sequence[str]], day: bool = False) -> Any:
    """Make `con` the query surface: each fact table the union of its hot rows (the `warehouse_lake`
    views of the PostgreSQL attached to `con` as catalog `hot`; none when None) and its `cold` Parquet
    (files or globs); `day`: with the hive `day` column of the files (for a surface without hot rows).
    Then the analysis relations over them. Returns `con`."""
    # DuckDB 1.5's common-subplan optimizer breaks arbitrage_windows over observed_ticks (migration
    # 0014: a window under windows, read twice): an internal binder error on a surface of Parquet alone.
    con.execute("SET disabled_optimizers = 'common_subplan'")
    for table in lake.EXPORT_TABLES:
        columns = [*lake.columns(table), *([("day", "DATE")] if day else [])]
        parts = []
        if hot is not None:
            held = {name for name, _ in lake.columns(table)}
            parts.append(f"SELECT {_select(columns, held)} FROM {hot}.warehouse_lake.{table}")
        if cold.get(table):
            listed = ", ".join("'" + file.replace("'", "''") + "'" for file in cold[table])
            hive = ", hive_partitioning = true, hive_types = {'day': DATE}" if day else ""
            read = f"read_parquet([{listed}], union_by_name = true{hive})"
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {read}").fetchall()}
            parts.append(f"SELECT {_select(columns, present)} FROM {read}")
        if not parts:  # nothing anywhere yet: no rows, the columns all the same
            parts.append(f"SELECT {_select(columns, set())} WHERE false")
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {' UNION ALL '.join(parts)}")
    for relation in relations.CURRENT:
        con.execute(relations.duckdb_ddl(relation))
    con.execute("CREATE OR REPLACE VIEW price_candles_1m AS SELECT * FROM price_candles(INTERVAL '1 minute')")
    return con


def _select(columns: list[tuple[str, str]], present: set[str]) -> str:
    """Each column in its lake type, null where the source lacks it."""
    return ", ".join(f"CAST({name if name in present else 'NULL'} AS {kind}) AS {name}" for name, kind in columns)
