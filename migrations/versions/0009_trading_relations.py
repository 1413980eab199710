"""The analysis relations V3: what a trader acts on.

New (warehouse.analysis.relations, tuple V3, frozen): observed_quotes (observed_ticks with is_open, the
one definition of an open price), margin_parameter(implied, method) (Shin's z or the power method's
k, by bisection), best_prices_as_of(as_of), fair_prices_as_of(as_of, method), consensus_as_of(as_of,
method), lead_lag(min_move, span, since, until), arbitrage_windows(min_edge, since, until) and the
view closing_line_value. steam_moves gains a window [since, until) and `event_window`, all with
defaults (a call with the three parameters of before works and gives the same episodes), and a
last column after_event; it is written with window functions instead of self-joins, so one
fixture or a short window reads only its own rows, and a frame that moves several bookmakers at
once starts one episode, not one per bookmaker.

Indexes: none new. A fixture's rows are found by price_ticks (fixture_id, market_id, outcome_id,
received_at) and score_changes (fixture_id, received_at), a window by the day partitions (or
TimescaleDB's chunks) and the BRIN on received_at; the relations read each row once, in windows,
rather than probing per move (docs/performance.md).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from warehouse.analysis.relations import (
    V2,
    V3,
    Relation,
    postgres_comment,
    postgres_ddl,
    postgres_drop,
    same_in_postgres,
)

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NEW = tuple(relation for relation in V3 if not any(same_in_postgres(relation, old) for old in V2))
REPLACED = tuple(relation for relation in V2 if relation.name in {r.name for r in NEW})


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _install(relations: tuple[Relation, ...]) -> None:
    for relation in relations:
        _sql(postgres_ddl(relation))
        comment = postgres_comment(relation)
        if comment:
            _sql(comment)
    views = ", ".join(relation.name for relation in relations if not relation.params)
    for role in ("warehouse_reader", "warehouse_writer"):
        if views:
            _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
                 f" GRANT SELECT ON {views} TO {role}; END IF; END $$")


def upgrade() -> None:
    for relation in reversed(REPLACED):
        _sql(postgres_drop(relation))
    _install(NEW)


def downgrade() -> None:
    for relation in reversed(NEW):
        _sql(postgres_drop(relation))
    _install(REPLACED)
