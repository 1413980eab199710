"""The Parquet lake's contract: where each table-day lives and the type each column has there.

Written by warehouse.export, read by warehouse.analysis (and replay, and retention's checks).
Declarations only, derived from warehouse.schema: nothing here reads or writes a file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, Float, Integer, Numeric, Text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

from warehouse import schema

EXPORT_TABLES: tuple[str, ...] = schema.FACT_TABLES
# Unconstrained numerics are written as this exact decimal (and read back as it by warehouse.analysis).
PARQUET_DECIMAL = "DECIMAL(38, 12)"

# SQLAlchemy column type -> the DuckDB type the export writes it as (the first that fits).
_DUCKDB_TYPES = ((Float, "DOUBLE"), (Numeric, PARQUET_DECIMAL), (BigInteger, "BIGINT"), (Integer, "INTEGER"),
                 (Boolean, "BOOLEAN"), (TIMESTAMP, "TIMESTAMPTZ"), (Date, "DATE"), (JSONB, "JSON"),
                 (UUID, "UUID"), (Text, "VARCHAR"))


def duckdb_type(kind: Any) -> str:
    for sqlalchemy_type, duckdb_name in _DUCKDB_TYPES:
        if isinstance(kind, sqlalchemy_type):
            return duckdb_name
    raise TypeError(f"no DuckDB type for {kind!r}")


def columns(table: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a table as the lake holds it."""
    return [(column.name, duckdb_type(column.type)) for column in schema.metadata.tables[table].columns]


def file_sha256(path: Path) -> str:
    """The sha256 `export_runs` records for an exported file, and retention checks again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
