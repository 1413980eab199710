"""What the export reads from PostgreSQL for one table-day: its rows in the lake's types (through
DuckDB's postgres extension, warehouse.store.duckdb) and the check that they all fit the lake.

Every value reaches DuckDB exactly: PostgreSQL sends each unconstrained numeric as a decimal of the
lake's scale (the postgres extension would read it as a DOUBLE), json and jsonb as their text, UUIDs
as canonical text. A value the lake cannot hold exactly arrives as NULL in that read, and the
day's check names it, so the day fails instead of being exported with a changed value.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg

from warehouse import lake, schema
from warehouse.lifecycle.days import bounds
from warehouse.store.duckdb import ATTACHED


@dataclass(frozen=True)
class DayCheck:
    rows: int  # PostgreSQL's count of the table-day now
    unfit: tuple[str, str, str] | None  # (column, value as PostgreSQL prints it, the limit) the lake cannot hold


def day_rows(table: str, day: date, slices: int = 1) -> str:
    """A DuckDB table expression: the table-day's rows, every column in its lake type (lake.columns),
    read as `slices` consecutive time slices of the day, which DuckDB reads in parallel (one query and
    connection each). PostgreSQL prunes the parent to the day's partition (or TimescaleDB chunk) and
    finds each slice's rows with the received_at BRIN index."""
    columns = ", ".join(_lake_column(column) for column in schema.metadata.tables[table].columns)
    start = bounds(day)[0]
    edges = [(start + timedelta(days=1) * part / slices).isoformat() for part in range(slices + 1)]
    reads = []
    for low, high in itertools.pairwise(edges):
        select = f"SELECT {columns} FROM public.{table} WHERE received_at >= '{low}' AND received_at < '{high}'"
        reads.append(f"SELECT * FROM postgres_query('{ATTACHED}', '{select.replace(chr(39), chr(39) * 2)}')")
    return f"({' UNION ALL '.join(reads)})"


def _lake_column(column: Any) -> str:
    name: str = column.name
    if lake.as_text(column.type):
        return f"{name}::text AS {name}"
    if lake.is_decimal(column.type):
        # The cast outside the CASE carries the type's scale to DuckDB (a CASE would drop it).
        return f"(CASE WHEN {_fits(name)} THEN {name} END)::numeric({lake.DECIMAL_PRECISION}, {lake.DECIMAL_SCALE})" \
               f" AS {name}"
    return name


def _fits(name: str) -> str:
    """SQL: the numeric `name` is exactly a lake decimal (NaN and ±Infinity are not below 1e20)."""
    return f"abs({name}) < 1e{lake.DECIMAL_INTEGER_DIGITS} AND round({name}, {lake.DECIMAL_SCALE}) = {name}"


def check_day(url: str, table: str, day: date) -> DayCheck:
    """The table-day's row count in PostgreSQL now, and one value (if any) the lake cannot hold,
    found in the same scan."""
    checks = []
    for column in schema.metadata.tables[table].columns:
        name = column.name
        if lake.is_decimal(column.type):
            checks.append((name, lake.DECIMAL_LIMIT, f"NOT ({_fits(name)})"))
        elif lake.is_timestamp(column.type) and name != "received_at":  # the day bounds received_at
            checks.append((name, lake.TIMESTAMP_LIMIT, f"NOT ({name} >= '{lake.TIMESTAMP_FIRST}'"
                                                       f" AND {name} < '{lake.TIMESTAMP_END}')"))
    found = "".join(f", min({name}::text) FILTER (WHERE {condition})" for name, _, condition in checks)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*){found} FROM {table} WHERE received_at >= %s AND received_at < %s",
                           bounds(day)).fetchone()
    assert row is not None
    unfit = next(((name, value, limit) for (name, limit, _), value in zip(checks, row[1:], strict=True)
                  if value is not None), None)
    return DayCheck(row[0], unfit)
