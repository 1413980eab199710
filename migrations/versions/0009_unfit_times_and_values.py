"""Times and values the lake cannot hold: refused by the database, and loud on the query surface.

1. A CHECK on `received_at` of every fact table: 2000-01-01 <= received_at < 2100-01-01 (why this
   window: warehouse.schema). `received_at` decides the UTC day a row is exported and retained with:
   a row at `infinity` (any role that may insert can write one) made the export and retention fail
   on a date Python cannot hold; one at 0001-01-01 made the export plan eight million table-days.
   Partitions and chunks made later inherit the constraint.

   No table is scanned and nothing waits for this: each constraint is added NOT VALID (instant; every
   new row is checked) after counting the rows already outside the window, which PostgreSQL finds by
   partition pruning and TimescaleDB by chunk exclusion, without reading the days in between.
   VALIDATE is left out: it reads every row of every day (and TimescaleDB cannot validate a hypertable
   with compression: "operation not supported on hypertables that have columnstore enabled"); the
   count already says what it would. Rows found outside stay (history is never rewritten): one warning
   line per table names the count, and the export and retention leave those rows out, saying so.
   (TimescaleDB checks the rows of a compressed chunk even against a NOT VALID constraint, so the
   chunks holding rows outside the window are decompressed first: only those, as 0004 did.)

2. The lake views of 0008 (what the query surface reads the days in PostgreSQL through) handed a
   value the lake cannot hold to DuckDB as NULL (a numeric beyond numeric(38, 18)) or as a time DuckDB
   turns into a naive 9999-12-31T23:59:59.999999 (±infinity in source_ts or start_time). Each such
   value now fails the query that reads it, with one line naming the table, column and value
   (`warehouse_lake.unfit`); a query not reading that column is not affected. `received_at` stays a
   plain column, so a filter on it still reaches the index and prunes partitions: the CHECK keeps it
   fit.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType

from alembic import context, op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen with this migration (the schema's fact tables at revision 0009).
FACT_TABLES = ("raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
               "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine")
FIRST, END = "2000-01-01 00:00:00+00", "2100-01-01 00:00:00+00"
WINDOW = f"received_at >= '{FIRST}' AND received_at < '{END}'"
# The timestamptz columns besides received_at at revision 0009, and the times the lake holds.
TIMES = ("source_ts", "start_time")
TIME_LIMIT = ("'0001-01-01 00:00:00+00'", "'10000-01-01 00:00:00+00'", "a UTC time from year 1 to 9999")
DECIMAL_LIMIT = "at most 20 integer and 18 fractional digits, no NaN or infinity"
SCHEMA = "warehouse_lake"


def _name(table: str) -> str:
    return f"{table}_received_at_window"


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _lake_views() -> ModuleType:
    """Migration 0008: the lake views' columns at this revision, and how 0008 read them (the downgrade)."""
    return context.script.get_revision("0008").module


def _expression(table: str, spec: str) -> str:
    """A column of the lake view: as 0008 made it, except that a value the lake cannot hold raises."""
    name, _, kind = spec.partition(" ")
    if kind == "decimal":
        fits, limit = f"abs({name}) < 1e20 AND round({name}, 18) = {name}", DECIMAL_LIMIT
    elif name in TIMES:
        fits, limit = f"{name} >= {TIME_LIMIT[0]} AND {name} < {TIME_LIMIT[1]}", TIME_LIMIT[2]
    else:
        return _lake_views()._expression(spec)
    cast = "::numeric(38, 18)" if kind == "decimal" else ""
    return (f"(CASE WHEN {name} IS NULL OR ({fits}) THEN {name}"
            f" ELSE {SCHEMA}.unfit('{table}', '{name}', {name}, '{limit}') END){cast} AS {name}")


def _views(column: Callable[[str, str], str]) -> None:
    for table, specs in _lake_views().COLUMNS.items():
        _sql(f"CREATE OR REPLACE VIEW {SCHEMA}.{table} AS"
             f" SELECT {', '.join(column(table, spec) for spec in specs)} FROM public.{table}")


def _decompress_outside(table: str) -> None:
    """TimescaleDB checks a compressed chunk's rows against a new constraint even NOT VALID: the chunks
    not inside the window (where such rows are: chunks are whole UTC days) are decompressed first."""
    for (chunk,) in op.get_bind().execute(text(
            "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = 'public' AND hypertable_name = :t AND is_compressed"
            f" AND NOT (range_start >= '{FIRST}' AND range_end <= '{END}')"), {"t": table}).fetchall():
        _sql(f"SELECT decompress_chunk('{chunk}')")


def upgrade() -> None:
    bind = op.get_bind()
    timescale = bind.scalar(text("SELECT value FROM warehouse_meta WHERE key = 'storage'")) == "timescaledb"
    for table in FACT_TABLES:
        outside = bind.scalar(text(f"SELECT count(*) FROM public.{table} WHERE NOT ({WINDOW})"))
        if outside and timescale:
            _decompress_outside(table)
        if outside:
            logging.getLogger("warehouse.migrate").warning(
                "%s holds %d rows with received_at before %s or from %s on: they stay, never exported nor"
                " retained, and new ones are refused (docs/reliability.md, \"Times the lake holds\")",
                table, outside, FIRST[:10], END[:10])
        _sql(f"ALTER TABLE public.{table} ADD CONSTRAINT {_name(table)} CHECK ({WINDOW}) NOT VALID")
    _sql(
        f"""
        CREATE FUNCTION {SCHEMA}.unfit(table_name text, column_name text, value anyelement, holds text)
        RETURNS anyelement LANGUAGE plpgsql STABLE AS $$
        BEGIN
            RAISE EXCEPTION 'odds-warehouse: %.% = % cannot be read as the lake holds it (%); the row did not come'
                ' through a feed adapter: leave it out of the query, or correct it as the table''s owner',
                table_name, column_name, value, holds USING ERRCODE = 'data_exception';
        END $$
        """
    )
    _views(_expression)


def downgrade() -> None:
    _views(lambda table, spec: _lake_views()._expression(spec))
    _sql(f"DROP FUNCTION IF EXISTS {SCHEMA}.unfit(text, text, anyelement, text)")
    for table in FACT_TABLES:
        _sql(f"ALTER TABLE public.{table} DROP CONSTRAINT IF EXISTS {_name(table)}")
