"""TimescaleDB: the 1-minute candle aggregate's refresh policy covers all of history.

Migration 0001 refreshed `price_candles_1m` over the last 3 days only. Its real-time part reads
ticks live only above the materialisation watermark, so after the policy's first run every
bucket older than its window — rows older than 3 days when TimescaleDB was enabled, a spool
replayed after a longer outage, a policy that could not run for days for lack of a background
worker — was missing from the aggregate for good (and a late row inside an older bucket never
reached it). Without a start offset, each run refreshes whatever was invalidated, whenever it
lies, and only that, so a run costs the same as before; the first run materialises all history.
Plain PostgreSQL (a view computed from the ticks) is unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _timescaledb() -> bool:
    return op.get_bind().scalar(text("SELECT value FROM warehouse_meta WHERE key = 'storage'")) == "timescaledb"


def _refresh_policy(start_offset: str) -> None:
    op.execute(text("SELECT remove_continuous_aggregate_policy('price_candles_1m', if_exists => true)"))
    op.execute(text(
        f"SELECT add_continuous_aggregate_policy('price_candles_1m', start_offset => {start_offset},"
        " end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute')"))


def upgrade() -> None:
    if _timescaledb():
        _refresh_policy("NULL")


def downgrade() -> None:
    if _timescaledb():
        _refresh_policy("INTERVAL '3 days'")
