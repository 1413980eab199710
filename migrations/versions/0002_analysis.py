"""Line-movement analysis: views and SQL functions shared with the DuckDB side.

price_history, opening_closing_lines, market_overround (views); prices_as_of(as_of),
price_candles(width), steam_moves(min_move, min_books, span) (functions). Their SQL lives in
warehouse.analysis.relations (tuple V1, frozen) so the Parquet side runs the very same text.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from warehouse.analysis.relations import V1, postgres_ddl, postgres_drop

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for relation in V1:
        op.execute(text(postgres_ddl(relation)))
        if relation.doc:
            kind = "FUNCTION" if relation.params else "VIEW"
            target = relation.name + (f"({', '.join(k for _, k in relation.params)})" if relation.params else "")
            op.execute(text(f"COMMENT ON {kind} {target} IS '{relation.doc.replace(chr(39), chr(39) * 2)}'"))
    views = ", ".join(relation.name for relation in V1 if not relation.params)
    for role in ("warehouse_reader", "warehouse_writer"):
        op.execute(text(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
                        f" GRANT SELECT ON {views} TO {role}; END IF; END $$"))


def downgrade() -> None:
    for relation in reversed(V1):
        op.execute(text(postgres_drop(relation)))
