"""Rows from REST answers, and the analysis relations V2.

After a gap the collector fetches the vendor's state over REST (issue 16); the rows it derives are
told apart by a last column `origin` in every table that takes rows derived from frames (null:
pushed; 'snapshot': the state fetched after a gap; 'backfill': the vendor's history of the gap).
price_ticks gets a partial index on its REST rows, so the relations check only those against the
stream. The analysis relations become V2 (warehouse.analysis.relations, frozen): every one is built
on the new view observed_ticks, where a snapshot never rolls back a newer pushed price, and
steam_moves names each bookmaker once in `movers` (with movers_at / movers_from / movers_to).
Without TimescaleDB the 1-minute candle view follows; TimescaleDB's continuous aggregate cannot be
built on a view with subqueries and keeps reading price_ticks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from warehouse.analysis.relations import V1, V2, postgres_comment, postgres_ddl, postgres_drop

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ORIGIN_TABLES = ("price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
                 "bet_changes", "account_changes", "emergency_events")
ORIGIN_COMMENT = ("null: from a pushed frame; snapshot: the vendor's state fetched over REST after a gap;"
                  " backfill: the vendor's history of the gap")
# table -> (name, columns) of partial B-tree indexes on the rows from REST answers (origin IS NOT NULL)
REST_INDEXES = {"price_ticks": ("price_ticks_rest_idx", ("fixture_id", "market_id", "outcome_id", "received_at"))}
CANDLE_KEYS = "source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side"


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _native() -> bool:
    return op.get_bind().scalar(text("SELECT value FROM warehouse_meta WHERE key = 'storage'")) == "native"


def _candles_view(table: str) -> None:
    """The 1-minute candles of migration 0001 (native storage), read from `table`."""
    _sql(
        f"""
        CREATE OR REPLACE VIEW price_candles_1m AS
        SELECT date_bin(INTERVAL '1 minute', received_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               {CANDLE_KEYS},
               (array_agg(price ORDER BY received_at, raw_id))[1] AS open, max(price) AS high,
               min(price) AS low, (array_agg(price ORDER BY received_at DESC, raw_id DESC))[1] AS close,
               count(*) AS ticks
        FROM {table} WHERE price IS NOT NULL
        GROUP BY 1, {CANDLE_KEYS}
        """
    )


def _install(relations: tuple) -> None:
    for relation in relations:
        _sql(postgres_ddl(relation))
        comment = postgres_comment(relation)
        if comment:
            _sql(comment)
    views = ", ".join(relation.name for relation in relations if not relation.params)
    for role in ("warehouse_reader", "warehouse_writer"):
        _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
             f" GRANT SELECT ON {views} TO {role}; END IF; END $$")


def upgrade() -> None:
    for table in ORIGIN_TABLES:
        _sql(f"ALTER TABLE {table} ADD COLUMN origin text")
        _sql(f"COMMENT ON COLUMN {table}.origin IS '{ORIGIN_COMMENT.replace(chr(39), chr(39) * 2)}'")
    for table, (name, columns) in REST_INDEXES.items():
        _sql(f"CREATE INDEX {name} ON {table} ({', '.join(columns)}) WHERE origin IS NOT NULL")
    for relation in reversed(V1):
        _sql(postgres_drop(relation))
    _install(V2)
    if _native():
        _candles_view("observed_ticks")


def downgrade() -> None:
    if _native():
        _candles_view("price_ticks")
    for relation in reversed(V2):
        _sql(postgres_drop(relation))
    for name, _ in REST_INDEXES.values():
        _sql(f"DROP INDEX {name}")
    for table in ORIGIN_TABLES:  # before V1 is back: its price_history reads `*` of price_ticks
        _sql(f"ALTER TABLE {table} DROP COLUMN origin")
    _install(V1)
