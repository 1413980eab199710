"""The Parquet contract, held by the readers people use: pyarrow, polars, pandas and DuckDB read every
exported table exactly as PostgreSQL holds it, value by value, in types that are what they are
(exact decimals, UTC microsecond timestamps, JSON and UUIDs as text), with the `day` partition, and
a table-day with no rows is a file with the full schema. (Spark: tests/test_spark.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests import lakekit
from tests.lakekit import DAY, EMPTY_DAY, postgres_rows, rows_as_set
from warehouse import analysis, lake
from warehouse.lifecycle import layout

# The type each reader gives a lake column (by its DuckDB type in warehouse.lake).
ARROW = {lake.PARQUET_DECIMAL: pa.decimal128(lake.DECIMAL_PRECISION, lake.DECIMAL_SCALE), "DOUBLE": pa.float64(),
         "BIGINT": pa.int64(), "INTEGER": pa.int32(), "BOOLEAN": pa.bool_(), "VARCHAR": pa.string(),
         "TIMESTAMPTZ": pa.timestamp("us", tz="UTC")}
POLARS = {lake.PARQUET_DECIMAL: pl.Decimal(lake.DECIMAL_PRECISION, lake.DECIMAL_SCALE), "DOUBLE": pl.Float64,
          "BIGINT": pl.Int64, "INTEGER": pl.Int32, "BOOLEAN": pl.Boolean, "VARCHAR": pl.String,
          "TIMESTAMPTZ": pl.Datetime("us", "UTC")}

DUCKDB = {lake.PARQUET_DECIMAL: lake.PARQUET_DECIMAL.replace(" ", ""), "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}


def read_pyarrow(path: Path) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in pq.read_table(path).to_pylist()]


def read_polars(path: Path) -> list[tuple[Any, ...]]:
    return pl.read_parquet(path).rows()


def read_pandas(path: Path) -> list[tuple[Any, ...]]:
    # The pyarrow backend keeps NULL apart from NaN and 64-bit integers exact (numpy's turns both to float).
    frame = pd.read_parquet(path, dtype_backend="pyarrow")
    return [tuple(None if v is pd.NA else v for v in row) for row in frame.itertuples(index=False, name=None)]


def read_duckdb(path: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT * FROM read_parquet('{path}', hive_partitioning = false)").fetchall()


READERS = {"pyarrow": read_pyarrow, "polars": read_polars, "pandas": read_pandas, "duckdb": read_duckdb}


@pytest.fixture
def exported(db_url: str, tmp_path: Path) -> tuple[str, Path]:
    return db_url, lakekit.export(db_url, tmp_path / "lake")


def test_every_reader_reads_every_table_value_by_value_as_postgresql_holds_it(exported: tuple[str, Path]) -> None:
    url, root = exported
    for table in lake.EXPORT_TABLES:
        expected = rows_as_set(postgres_rows(url, table))
        assert len(expected) == lakekit.rows(table) >= 6, table  # every edge of every column is in some row
        path = layout.file(root, table, DAY)
        for reader, read in READERS.items():
            assert rows_as_set(read(path)) == expected, f"{reader} reads {table} differently from PostgreSQL"


def test_every_reader_sees_the_lake_types(exported: tuple[str, Path]) -> None:
    _, root = exported
    for table in lake.EXPORT_TABLES:
        for day in (DAY, EMPTY_DAY):
            path = layout.file(root, table, day)
            names = [name for name, _ in lake.columns(table)]
            arrow = pq.read_schema(path)
            assert [(f.name, f.type) for f in arrow] == [(n, ARROW[kind]) for n, kind in lake.columns(table)], path
            assert list(pl.read_parquet_schema(path).items()) == [(n, POLARS[kind]) for n, kind in
                                                                    lake.columns(table)], path
            assert list(pd.read_parquet(path, dtype_backend="pyarrow").columns) == names
            described = duckdb.sql(f"DESCRIBE FROM read_parquet('{path}', hive_partitioning = false)").fetchall()
            assert [(n, k) for n, k, *_ in described] == [(n, DUCKDB.get(k, k)) for n, k in lake.columns(table)]
            # plain strings: no JSON or UUID annotation for a reader to turn into binary or refuse
            logical = {pq.ParquetFile(path).schema.column(i).logical_type.type for i in range(len(names))}
            assert not logical & {"JSON", "UUID", "BSON"}, (path, logical)


def test_a_table_with_no_rows_that_day_is_a_file_every_reader_reads_as_empty(exported: tuple[str, Path]) -> None:
    url, root = exported
    for table in lake.EXPORT_TABLES:
        path = layout.file(root, table, EMPTY_DAY)
        expected = rows_as_set(postgres_rows(url, table, EMPTY_DAY))
        assert len(expected) == (1 if table == "raw_messages" else 0)
        for reader, read in READERS.items():
            assert rows_as_set(read(path)) == expected, (reader, table)


def test_every_reader_takes_a_table_folder_with_its_day_partition(exported: tuple[str, Path]) -> None:
    url, root = exported
    for table in lake.EXPORT_TABLES:
        folder = root / table
        per_day = {str(day): len(postgres_rows(url, table, day)) for day in (DAY, EMPTY_DAY)}
        days = [str(d) for d in ds.dataset(folder, format="parquet", partitioning="hive").to_table()["day"].to_pylist()]
        assert {d: days.count(d) for d in per_day} == per_day and len(days) == sum(per_day.values()), table
        rows = duckdb.sql(f"SELECT day::VARCHAR, count(*) FROM read_parquet('{folder}/**/*.parquet',"
                          " hive_partitioning = true) GROUP BY 1").fetchall()
        assert dict(rows) == {d: n for d, n in per_day.items() if n}, table
        frame = pl.scan_parquet(folder, hive_partitioning=True).collect()
        assert frame.schema["day"] == pl.Date
        assert {str(d): n for d, n in frame.group_by("day").len().rows()} == {d: n for d, n in per_day.items() if n}
    # and the analysis connection reads the same lake, day as a DATE, JSON usable as JSON
    con = analysis.connect(export_dir=root)
    assert con.execute("SELECT count(*), min(day) FROM raw_messages").fetchone() == (
        len(postgres_rows(url, "raw_messages")) + 1, DAY)
    assert con.execute("SELECT payload->'bookmakerOdds'->>'pinnacle' FROM raw_messages"
                       " WHERE payload LIKE '%bookmakerOdds%'").fetchall() == [("{}",)]


def test_every_reader_gets_the_day_as_a_date_as_the_parquet_page_says(exported: tuple[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 26 item 15: the hive `day` is a string in pyarrow and a dictionary in pandas unless told
    _, root = exported
    page = (Path(__file__).resolve().parent.parent / "docs" / "parquet.md").read_text()
    section = page[page.index("## Reading it"):]
    start = section.index("```python\n") + len("```python\n")
    block = section[start:section.index("```\n", start)]
    monkeypatch.chdir(root.parent)
    (root.parent / "exports").symlink_to(root)
    names: dict[str, Any] = {}
    exec(compile(block, "docs/parquet.md", "exec"), names)  # the documentation's own example
    assert names["table"].schema.field("day").type == pa.date32()
    assert sorted(set(names["table"]["day"].to_pylist())) == [DAY]  # price_ticks has no row on EMPTY_DAY
    assert names["frame"].schema["day"] == pl.Date and names["frame"]["day"].unique().to_list() == [DAY]
    assert str(names["df"].dtypes["day"]) == "date32[day][pyarrow]" and set(names["df"]["day"]) == {DAY}
    assert names["rel"].types[names["rel"].columns.index("day")] == "DATE"
    assert {row[0] for row in names["rel"].select("day").fetchall()} == {DAY}
