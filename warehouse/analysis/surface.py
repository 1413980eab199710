"""One query surface over hot and cold days: DuckDB, with the same tables and relations as PostgreSQL.

    from warehouse import analysis
    con = analysis.connect()                        # the configured database, and the days retention moved out
    con.sql("SELECT * FROM price_history WHERE fixture_id = 'id1000' AND market_id = '101'").df()
    con = analysis.connect(export_dir="exports")    # the Parquet export alone (no database)

Each fact table is every row still in PostgreSQL — read through the `warehouse_lake` views, which
hand DuckDB the lake's exact types and take its filters (an index lookup stays one) — plus, from
Parquet, every table-day retention dropped from PostgreSQL (its `retention_runs` row names the file).
A day is in PostgreSQL until retention drops it, and retention drops it only after its export was
verified, so every row is read from exactly one place; rows that arrive for a day after it was
dropped stay in PostgreSQL, where the surface reads them too. The analysis relations
(warehouse.analysis.relations) are DuckDB views and macros over these tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from warehouse import lake
from warehouse.analysis import relations


def connect(url: str | None = None, export_dir: str | Path | None = None) -> Any:
    """A DuckDB connection over the warehouse: `url` (default: the configured database, as every command
    finds it) and the Parquet files of the days retention dropped — under `export_dir` when given (an
    export moved or mounted elsewhere), else where retention recorded them. With only `export_dir`,
    the Parquet export alone."""
    if url is None and export_dir is not None:
        from warehouse.analysis import parquet

        return parquet.connect(export_dir)
    from warehouse.store.database import resolve_database_url
    from warehouse.store.exports import duckdb_connection
    from warehouse.store.retention import retained_files

    url = url or resolve_database_url()
    con = duckdb_connection(url)
    root = Path(export_dir).expanduser() if export_dir is not None else None
    cold = retained_files(url)
    for table in lake.EXPORT_TABLES:
        columns = lake.columns(table)
        select = ", ".join(f"CAST({name} AS {kind}) AS {name}" for name, kind in columns)
        parts = [f"SELECT {select} FROM pg.warehouse_lake.{table}"]
        files = [str(root / table / f"day={day.isoformat()}" / lake.PART_FILE) if root else path
                 for day, path in cold.get(table, [])]
        if files:
            listed = ", ".join("'" + file.replace("'", "''") + "'" for file in files)
            read = f"read_parquet([{listed}], union_by_name = true)"
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {read}").fetchall()}
            # files exported before a column was added (e.g. origin) read as null in it
            cold_select = ", ".join(f"CAST({name if name in present else 'NULL'} AS {kind}) AS {name}"
                                    for name, kind in columns)
            parts.append(f"SELECT {cold_select} FROM {read}")
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {' UNION ALL '.join(parts)}")
    for relation in relations.CURRENT:
        con.execute(relations.duckdb_ddl(relation))
    con.execute("CREATE OR REPLACE VIEW price_candles_1m AS SELECT * FROM price_candles(INTERVAL '1 minute')")
    return con
