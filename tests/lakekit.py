"""Edge values in every column of every exported table, exported, and PostgreSQL's own reading of them:
what tests/test_lake_readers.py (pyarrow, polars, pandas, DuckDB) and tests/test_spark.py compare.

Values are inserted by hand with SQL, as text cast by PostgreSQL: the edges of what each column and
the lake hold (decimals at the limits of DECIMAL(38, 18), doubles down to the smallest subnormal and
NaN/±Infinity, 64-bit integers, timestamps in year 1 and 9999, non-ASCII and TOASTed text, SQL NULL
beside JSON null, raw frames with their spacing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB, UUID

from warehouse import lake, schema
from warehouse.lifecycle.export import export_all

DAY = date(2026, 3, 1)
EMPTY_DAY = DAY + timedelta(days=1)  # only raw_messages has a row: every other table's file has none

EDGES: dict[str, list[str | None]] = {
    "DECIMAL": ["99999999999999999999.999999999999999999", "-99999999999999999999.999999999999999999",
                "0.000000000000000001", "-0.000000000000000001", "1234567890.12345", "98765432.10",
                "1.5000000000000000000000", "0", None],
    "DOUBLE": ["1.345", "1.7976931348623157e308", "-2.2250738585072014e-308", "5e-324", "NaN", "Infinity",
               "-Infinity", "-0", None],
    "BIGINT": ["9223372036854775807", "-9223372036854775808", "0", None],
    "INTEGER": ["2147483647", "-2147483648", "0", None],
    "BOOLEAN": ["true", "false", None],
    "TIMESTAMPTZ": ["0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00", "1969-12-31 23:59:59.999999+00",
                    "2026-03-01 12:34:56.123456+00", None],
    "received_at": [f"{DAY} 00:00:00+00", f"{DAY} 23:59:59.999999+00", f"{DAY} 12:00:00.000001+00"],
    "VARCHAR": ["下半场 ⚽ é", "", "quote ' and \" and \\ backslash", "line\nbreak\ttab", "x" * 5000, None],
    "UUID": ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
             "0b7e7d3c-5f7c-4a8e-9d2f-222222222222", None],
    "jsonb": ['{"a": "é", "b": [1, null, 2.50], "大": "小"}', "null", '"text"', "[]", '{"n": 1e40}', "{}", None],
    "json": ['{ "b":1,"a" : [1.50, "é"],  "a": 2 }', "null", '{"bookmakerOdds": {"pinnacle": {}}}', "[1e40]",
             None],
}


def edge_kind(column: Any) -> str:
    if column.name == "received_at":
        return "received_at"
    if isinstance(column.type, UUID):
        return "UUID"
    if isinstance(column.type, JSONB):
        return "jsonb"
    if lake.as_text(column.type):
        return "json"
    return lake.duckdb_type(column.type).split("(")[0]


def edges(table: str) -> list[list[str | None]]:
    """Per column of `table`, the edge values it gets (no NULL where the column takes none)."""
    columns = schema.metadata.tables[table].columns
    return [[v for v in EDGES[edge_kind(c)] if v is not None or c.nullable] for c in columns]


def rows(table: str) -> int:
    """The rows `fill` gives `table` on DAY: enough for every edge of every column to appear."""
    return max(len(values) for values in edges(table))


def fill(url: str) -> None:
    """Rows of edge values in every exported table on DAY, and one raw frame on EMPTY_DAY."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in lake.EXPORT_TABLES:
            columns = list(schema.metadata.tables[table].columns)
            names = ", ".join(c.name for c in columns)
            casts = ", ".join(f"%s::{c.type.compile(dialect=postgresql.dialect())}" for c in columns)
            for row in range(rows(table)):
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({casts})",
                             [values[row % len(values)] for values in edges(table)])
        conn.execute("INSERT INTO raw_messages (received_at, source, connection_id, seq, kind, payload)"
                     " VALUES (%s, 'oddspapi', gen_random_uuid(), 1, 'price', '{\"p\": 1}')",
                     (datetime(EMPTY_DAY.year, EMPTY_DAY.month, EMPTY_DAY.day, 6, tzinfo=UTC),))


def export(url: str, root: Path) -> Path:
    fill(url)
    export_all(url, root, [(table, day) for table in lake.EXPORT_TABLES for day in (DAY, EMPTY_DAY)])
    return root


def postgres_rows(url: str, table: str, day: date = DAY) -> list[tuple[Any, ...]]:
    """The table-day as PostgreSQL holds it: JSON and UUIDs as PostgreSQL's text of them (the contract)."""
    columns = ", ".join(f"{c.name}::text" if lake.as_text(c.type) else c.name
                        for c in schema.metadata.tables[table].columns)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(f"SELECT {columns} FROM {table} WHERE received_at >= %s AND received_at < %s",
                            (start, start + timedelta(days=1))).fetchall()


_WIDE = Context(prec=100)


def canon(value: Any) -> Any:
    """A value as a reader hands it over, in one comparable form: decimals by value, floats by their
    bits' repr (NaN equals NaN, -0.0 is not 0.0), timestamps as UTC instants."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):  # pandas
        value = value.to_pydatetime()
    if isinstance(value, Decimal):
        return ("decimal", format(_WIDE.normalize(value), "f"))
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if isinstance(value, datetime):
        assert value.tzinfo is not None, f"naive timestamp {value!r}: a reader lost the UTC zone"
        return ("timestamp", value.astimezone(UTC).isoformat())
    return value


def rows_as_set(rows: Iterable[Iterable[Any]]) -> list[tuple[Any, ...]]:
    """Rows as a sorted list of canonical tuples: a multiset compared with ==."""
    return sorted((tuple(canon(v) for v in row) for row in rows), key=repr)
