"""The Parquet lake's contract: the tables it holds, the type each column has there, and its limits.

Written by warehouse.lifecycle.export, read by warehouse.analysis and replay; the feed adapters refuse
values outside its limits. Declarations only, derived from warehouse.schema: nothing here reads or
writes a file (where files go: warehouse.lifecycle.layout). Every exported value equals PostgreSQL's,
in a type every common reader (pyarrow, polars, pandas, DuckDB, Spark) reads as what it is:
docs/parquet.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, Float, Integer, Numeric, Text
from sqlalchemy.dialects.postgresql import TIMESTAMP, UUID

from warehouse import schema

EXPORT_TABLES: tuple[str, ...] = schema.FACT_TABLES

# The one decimal type of the lake, for every unconstrained `numeric` column. 18 fractional digits
# hold any amount a vendor can quote exactly (crypto-settled stakes go to 18 decimals, wei; odds and
# lines use 2-4); 20 integer digits hold any stake in any currency (1e20 dwarfs any book's limit,
# even in minor units of VND or IDR). 38 digits is the most a Parquet decimal every reader takes
# (a 16-byte fixed-length array) can have. A value outside this is refused where it enters (the
# adapters' to_decimal), never rounded.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 18
DECIMAL_INTEGER_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
PARQUET_DECIMAL = f"DECIMAL({DECIMAL_PRECISION}, {DECIMAL_SCALE})"
DECIMAL_LIMIT = (f"at most {DECIMAL_INTEGER_DIGITS} integer and {DECIMAL_SCALE} fractional digits,"
                 " no NaN or infinity")
# Integer columns (scores, minutes) are 32-bit in PostgreSQL and in the lake; double precision columns
# (prices) hold the nearest double to the number sent, which must be neither infinite nor 0 for a number
# that is not 0. Values beyond are refused where they enter, like decimals.
INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1
INTEGER_LIMIT = f"from {INTEGER_MIN} to {INTEGER_MAX}"
DOUBLE_LIMIT = "within a double's range (0, or ±4.9e-324 to ±1.8e308)"

# Timestamps are UTC microseconds from year 1 to 9999: what Python's datetime (and so every reader's
# conversion to it) can hold. PostgreSQL takes more (4713 BC, year 294276, ±infinity): refused.
TIMESTAMP_FIRST = "0001-01-01 00:00:00+00"
TIMESTAMP_END = "10000-01-01 00:00:00+00"  # exclusive
TIMESTAMP_LIMIT = "a UTC time from year 1 to 9999"


def decimal_fits(value: Decimal) -> bool:
    """Whether PARQUET_DECIMAL holds `value` exactly (trailing fractional zeros do not count)."""
    if not value.is_finite():
        return False
    if not value:
        return True
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent < -DECIMAL_SCALE:  # more fractional digits than the scale, unless they end in zeros
        trailing_zeros = len(digits) - len(bytes(digits).rstrip(b"\0"))
        if exponent + trailing_zeros < -DECIMAL_SCALE:
            return False
    return value.adjusted() < DECIMAL_INTEGER_DIGITS


# SQLAlchemy column type -> the DuckDB type the lake holds it as (the first that fits). JSON (json and
# jsonb) and UUIDs are text: polars reads DuckDB's JSON-annotated strings as binary, Spark refuses
# Parquet's UUID type.
_DUCKDB_TYPES = ((Float, "DOUBLE"), (Numeric, PARQUET_DECIMAL), (BigInteger, "BIGINT"), (Integer, "INTEGER"),
                 (Boolean, "BOOLEAN"), (TIMESTAMP, "TIMESTAMPTZ"), (Date, "DATE"), (JSON, "VARCHAR"),
                 (UUID, "VARCHAR"), (Text, "VARCHAR"))


def duckdb_type(kind: Any) -> str:
    for sqlalchemy_type, duckdb_name in _DUCKDB_TYPES:
        if isinstance(kind, sqlalchemy_type):
            return duckdb_name
    raise TypeError(f"no DuckDB type for {kind!r}")


def columns(table: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a table as the lake's files hold it, in the files' order."""
    return [(column.name, duckdb_type(column.type)) for column in schema.metadata.tables[table].columns]


def as_text(kind: Any) -> bool:
    """Whether a column of this SQLAlchemy type is stored in the lake as PostgreSQL's text of it."""
    return isinstance(kind, JSON | UUID)


def is_decimal(kind: Any) -> bool:
    return duckdb_type(kind) == PARQUET_DECIMAL


def is_timestamp(kind: Any) -> bool:
    return isinstance(kind, TIMESTAMP)

