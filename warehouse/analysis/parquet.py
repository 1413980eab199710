"""The exported Parquet as a DuckDB database with the same tables and analysis relations as PostgreSQL.

    con = warehouse.analysis.parquet.connect("~/odds-export")
    con.sql("SELECT * FROM price_history WHERE fixture_id = 'id1000' AND market_id = '101'")

Every fact table is a view over `<dir>/<table>/day=YYYY-MM-DD/part-0.parquet` (the `day` partition column
comes along, as a DATE); a table with nothing exported yet is an empty table with the lake's
columns, so the analysis relations work on whatever has been exported. Column types are the
lake's (warehouse.lake): numerics are exact decimals, JSON and UUIDs are text. Files exported before
a column was added (e.g. `origin`, migration 0007) read as null in it.
"""

from __future__ import annotations

from pathlib import Path

from warehouse import lake
from warehouse.analysis import relations


def connect(export_dir: str | Path, con=None):
    """A DuckDB connection (new, in memory, unless `con` is given) over the Parquet in `export_dir`."""
    import duckdb

    root = Path(export_dir).expanduser()
    con = con or duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name in lake.EXPORT_TABLES:
        day = "day=????-??-??"  # not an earlier export's day=D.old-<pid> folder, if a run left one
        if any(root.glob(f"{name}/{day}/{lake.PART_FILE}")):
            path = str(root / name / day / lake.PART_FILE).replace("'", "''")
            read = (f"read_parquet('{path}', hive_partitioning = true, hive_types = {{'day': DATE}},"
                    " union_by_name = true)")
            present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {read}").fetchall()}
            missing = "".join(f", CAST(NULL AS {kind}) AS {column}" for column, kind in lake.columns(name)
                              if column not in present)
            con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT *{missing} FROM {read}")
        else:
            columns = ", ".join(f"{column} {kind}" for column, kind in [*lake.columns(name), ("day", "DATE")])
            con.execute(f"CREATE OR REPLACE TABLE {name} ({columns})")
    for relation in relations.CURRENT:
        con.execute(relations.duckdb_ddl(relation))
    con.execute("CREATE OR REPLACE VIEW price_candles_1m AS SELECT * FROM price_candles(INTERVAL '1 minute')")
    return con
