"""The export runs as warehouse_reader: let that role record what it exported (export_runs only).

export_runs is append-only like every fact table, so the reader still cannot change history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GRANTS = ("INSERT ON export_runs", "USAGE ON SEQUENCE export_runs_id_seq")


def _each(verb: str, preposition: str) -> None:
    for grant in GRANTS:
        op.execute(text("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'warehouse_reader') THEN"
                        f" {verb} {grant} {preposition} warehouse_reader; END IF; END $$"))


def upgrade() -> None:
    _each("GRANT", "TO")


def downgrade() -> None:
    _each("REVOKE", "FROM")
