"""The size of every exported file, so that a reader checks a cold file cheaply (issue 21 item 4).

`bytes` on `export_runs` (the export records it) and on `retention_runs` (the size of the file a
dropped table-day lives in: taken from the export that was verified, the latest `export_runs` row
with the same table, day and sha256, when `warehouse_drop_day` does not give it). The query surface
compares every cold file's size and footer row count with `retention_runs` before it reads it. Rows
recorded before this migration have no size: their files are checked by row count only.

IF NOT EXISTS: another change of the same release adds the same columns (the maintenance functions of
issue 21 items 1-2); whichever runs first adds them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _sql(statement: str) -> None:
    op.execute(text(statement))


def upgrade() -> None:
    _sql("ALTER TABLE export_runs ADD COLUMN IF NOT EXISTS bytes bigint")
    _sql("ALTER TABLE retention_runs ADD COLUMN IF NOT EXISTS bytes bigint")
    _sql(
        """
        CREATE FUNCTION warehouse_retention_runs_bytes() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
        BEGIN
            IF NEW.bytes IS NULL AND NEW.sha256 IS NOT NULL THEN
                NEW.bytes := (SELECT e.bytes FROM export_runs e WHERE e.table_name = NEW.table_name
                              AND e.day = NEW.day AND e.sha256 = NEW.sha256 ORDER BY e.id DESC LIMIT 1);
            END IF;
            RETURN NEW;
        END $$
        """
    )
    _sql("CREATE TRIGGER retention_runs_bytes BEFORE INSERT ON retention_runs"
         " FOR EACH ROW EXECUTE FUNCTION warehouse_retention_runs_bytes()")


def downgrade() -> None:
    _sql("DROP TRIGGER IF EXISTS retention_runs_bytes ON retention_runs")
    _sql("DROP FUNCTION IF EXISTS warehouse_retention_runs_bytes()")
    _sql("ALTER TABLE retention_runs DROP COLUMN IF EXISTS bytes")
    _sql("ALTER TABLE export_runs DROP COLUMN IF EXISTS bytes")
