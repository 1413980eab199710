"""The exported Parquet as a DuckDB database with the same tables and analysis relations as PostgreSQL.

    con = warehouse.analysis.parquet.connect("~/odds-export")
    con.sql("SELECT * FROM price_history WHERE fixture_id = 'id1000' AND market_id = '101'")

Every fact table is a view over `<dir>/<table>/day=*/*.parquet` (the `day` partition column comes
along); a table with nothing exported yet is an empty table with the PostgreSQL columns, so the
analysis relations work on whatever has been exported.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import BigInteger, Boolean, Date, Float, Integer, Numeric, Text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

from warehouse.analysis import relations
from warehouse.export.parquet import PARQUET_DECIMAL
from warehouse.store import tables

# SQLAlchemy column type -> the DuckDB type the export writes it as.
_DUCKDB_TYPES = ((Float, "DOUBLE"), (Numeric, PARQUET_DECIMAL), (BigInteger, "BIGINT"), (Integer, "INTEGER"),
                 (Boolean, "BOOLEAN"), (TIMESTAMP, "TIMESTAMPTZ"), (Date, "DATE"), (JSONB, "JSON"),
                 (UUID, "UUID"), (Text, "VARCHAR"))


def connect(export_dir: str | Path, con=None):
    """A DuckDB connection (new, in memory, unless `con` is given) over the Parquet in `export_dir`."""
    import duckdb

    root = Path(export_dir).expanduser()
    con = con or duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name in tables.FACT_TABLES:
        files = root / name / "day=*" / "*.parquet"
        if any(root.glob(f"{name}/day=*/*.parquet")):
            path = str(files).replace("'", "''")
            con.execute(f"CREATE OR REPLACE VIEW {name} AS"
                        f" SELECT * FROM read_parquet('{path}', hive_partitioning = true)")
        else:
            columns = ", ".join(f"{column.name} {_duckdb_type(column.type)}"
                                for column in tables.metadata.tables[name].columns)
            con.execute(f"CREATE OR REPLACE TABLE {name} ({columns})")
    for relation in relations.CURRENT:
        con.execute(relations.duckdb_ddl(relation))
    con.execute("CREATE OR REPLACE VIEW price_candles_1m AS SELECT * FROM price_candles(INTERVAL '1 minute')")
    return con


def _duckdb_type(kind) -> str:
    for sqlalchemy_type, duckdb_type in _DUCKDB_TYPES:
        if isinstance(kind, sqlalchemy_type):
            return duckdb_type
    raise TypeError(f"no DuckDB type for {kind!r}")
