"""The lake's view of PostgreSQL: schema `warehouse_lake`, one view per fact table in the lake's types.

The query surface (`warehouse query`, `warehouse.analysis.connect()`) reads the days still in
PostgreSQL through DuckDB's postgres extension, which reads an unconstrained `numeric` as a DOUBLE.
These views hand it every value exactly as the Parquet export holds it: numerics as
`numeric(38, 18)` (DuckDB's DECIMAL(38, 18); a value that type cannot hold reads as NULL, as the
export refuses it), JSON and UUIDs as their text. DuckDB pushes filters down into them, so a
fixture's line movement is still an index lookup in PostgreSQL. Frozen with this revision's
columns: a migration that adds a column to a fact table replaces its view
(tests/test_schema_copies.py holds the views equal to warehouse.schema and warehouse.lake).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = "warehouse_lake"
# table -> its columns at revision 0008 as "name kind", kind being how the lake holds it:
# `decimal` (numeric → numeric(38, 18)), `text` (json, jsonb, uuid → their text), `as is`.
COLUMNS: dict[str, tuple[str, ...]] = {
    "raw_messages": ("received_at", "source", "id", "connection_id text", "seq", "event_id", "kind",
                     "payload text"),
    "price_ticks": ("received_at", "source", "raw_id", "source_ts", "bookmaker", "fixture_id", "market_id",
                    "outcome_id", "player_id", "line decimal", "side", "price", "active", "status",
                    "max_stake decimal", "attrs text", "origin"),
    "market_changes": ("received_at", "source", "raw_id", "source_ts", "bookmaker", "fixture_id", "market_id",
                       "action", "status", "attrs text", "origin"),
    "fixture_changes": ("received_at", "source", "raw_id", "source_ts", "fixture_id", "bookmaker", "action",
                        "start_time", "status", "changes text", "origin"),
    "score_changes": ("received_at", "source", "raw_id", "source_ts", "fixture_id", "period", "home_score",
                      "away_score", "minute", "live", "status", "attrs text", "origin"),
    "order_changes": ("received_at", "source", "raw_id", "source_ts", "event", "order_id", "fixture_id",
                      "outcome_id", "exchange", "exchange_order_id", "order_status", "matched_status",
                      "price decimal", "stake decimal", "matched_stake decimal", "payload text", "old text",
                      "origin"),
    "bet_changes": ("received_at", "source", "raw_id", "source_ts", "event", "bet_id", "order_id", "bookmaker",
                    "bet_status", "price decimal", "stake decimal", "payload text", "old text", "origin"),
    "account_changes": ("received_at", "source", "raw_id", "source_ts", "event", "account_id", "payload text",
                        "old text", "origin"),
    "emergency_events": ("received_at", "source", "raw_id", "source_ts", "emergency", "reason", "payload text",
                         "origin"),
    "collector_events": ("received_at", "source", "raw_id", "connection_id text", "event", "detail text"),
    "quarantine": ("received_at", "source", "raw_id", "connection_id text", "reason", "frame"),
}
PRECISION, SCALE = 38, 18


def _expression(spec: str) -> str:
    name, _, kind = spec.partition(" ")
    if kind == "decimal":  # exactly the lake's decimal, or NULL (NaN and ±Infinity are not below 1e20)
        return (f"(CASE WHEN abs({name}) < 1e{PRECISION - SCALE} AND round({name}, {SCALE}) = {name}"
                f" THEN {name} END)::numeric({PRECISION}, {SCALE}) AS {name}")
    if kind == "text":
        return f"{name}::text AS {name}"
    return name


def _sql(statement: str) -> None:
    op.execute(text(statement))


def upgrade() -> None:
    _sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for table, columns in COLUMNS.items():
        _sql(f"CREATE VIEW {SCHEMA}.{table} AS SELECT {', '.join(map(_expression, columns))} FROM public.{table}")
    for role in ("warehouse_reader", "warehouse_writer"):
        _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
             f" GRANT USAGE ON SCHEMA {SCHEMA} TO {role};"
             f" GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {role}; END IF; END $$")


def downgrade() -> None:
    _sql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
