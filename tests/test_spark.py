"""Spark reads every exported table as PostgreSQL holds it, value by value (the edge values of
tests/lakekit.py), a table-day with no rows as empty, and a table folder with its `day` partition.

Runs where pyspark is importable and Java is installed; skipped otherwise. pyspark is not a dev
dependency (hundreds of MB, and it needs a JRE): `pip install pyspark==4.3.0` (the version it was
last run with, on OpenJDK 17) and `apt-get install default-jre-headless` to run it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import lakekit
from tests.lakekit import DAY, EMPTY_DAY, postgres_rows, rows_as_set
from warehouse import lake
from warehouse.lifecycle import layout

pytest.importorskip("pyspark")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java: apt-get install default-jre-headless")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("odds-warehouse-test")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
               .getOrCreate())
    yield session
    session.stop()


# The Spark SQL type of each lake type (by its DuckDB name in warehouse.lake).
SPARK = {lake.PARQUET_DECIMAL: f"decimal({lake.DECIMAL_PRECISION},{lake.DECIMAL_SCALE})", "DOUBLE": "double",
         "BIGINT": "bigint", "INTEGER": "int", "BOOLEAN": "boolean", "VARCHAR": "string", "TIMESTAMPTZ": "timestamp"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """PostgreSQL's timestamps as microseconds since 1970 UTC: how Spark's values are compared (PySpark's
    collect() cannot turn 0001-01-01 00:00 UTC into a Python datetime: "year 0 is out of range")."""
    return tuple((v - EPOCH) // timedelta(microseconds=1) if isinstance(v, datetime) else v for v in row)


def test_spark_reads_every_table_as_postgresql_holds_it(spark: Any, db_url: str, tmp_path: Path) -> None:
    root = lakekit.export(db_url, tmp_path / "lake")
    for table in lake.EXPORT_TABLES:
        for day in (DAY, EMPTY_DAY):
            frame = spark.read.parquet(str(layout.file(root, table, day)))
            assert [(f.name, f.dataType.simpleString()) for f in frame.schema] == [
                (name, SPARK[kind]) for name, kind in lake.columns(table)]
            exact = frame.selectExpr(*(f"unix_micros({name}) AS {name}" if kind == "TIMESTAMPTZ" else name
                                       for name, kind in lake.columns(table)))
            expected = rows_as_set(micros(row) for row in postgres_rows(db_url, table, day))
            assert rows_as_set(exact.collect()) == expected, f"Spark reads {table} {day} differently from PostgreSQL"
        folder = spark.read.parquet(str(root / table))
        days = {str(row["day"]): row["count"] for row in folder.groupBy("day").count().collect()}
        assert days == {str(d): n for d in (DAY, EMPTY_DAY) if (n := len(postgres_rows(db_url, table, d)))}, table
