"""Line-movement analysis: views and SQL functions shared with the DuckDB side.

price_history, opening_closing_lines, market_overround (views); prices_as_of(as_of),
price_candles(width), steam_moves(min_move, min_books, span) (functions): the relations' first
set, written out below as this revision creates them. warehouse.analysis.relations holds the
current set, the one DuckDB runs (tests/test_schema_copies.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen: never edit; a change to a relation is a new migration. 0007 replaces these relations,
# and restores them from here on downgrade.
CREATE: tuple[str, ...] = (  # each relation, then its comment
    """CREATE VIEW price_history AS
    SELECT received_at, source_ts, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
           price, prev_price,
           price - prev_price AS move,
           price / nullif(prev_price, 0) - 1 AS move_pct,
           1 / nullif(price, 0) AS implied_prob,
           active, status, max_stake, raw_id
    FROM (SELECT *, lag(price) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id,
          line, side ORDER BY received_at, raw_id) AS prev_price
          FROM price_ticks WHERE price IS NOT NULL) AS priced""",
    "COMMENT ON VIEW price_history IS 'Every price of a selection with the price before it, the move (absolute and "
    "relative) and the implied probability 1/price. Ticks without a price (suspensions, locked odds) are left out.'",
    """CREATE FUNCTION prices_as_of(as_of timestamptz)
    RETURNS TABLE (received_at timestamptz, source_ts timestamptz, source text, bookmaker text, fixture_id text,
        market_id text, outcome_id text, player_id text, line numeric, side text, price double precision,
        active boolean, status text, max_stake numeric, raw_id bigint)
    LANGUAGE sql STABLE AS $body$
    SELECT DISTINCT ON (source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side) received_at,
        source_ts, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, price, active,
        status, max_stake, raw_id
    FROM price_ticks WHERE received_at <= as_of
    ORDER BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at DESC,
        raw_id DESC
    $body$""",
    "COMMENT ON FUNCTION prices_as_of(timestamptz) IS 'The last tick of every selection at or before `as_of` "
    "(price null: suspended at that time).'",
    """CREATE VIEW opening_closing_lines AS
    WITH starts AS (
        SELECT fixture_id, (array_agg(start_time ORDER BY received_at DESC))[1] AS start_time
        FROM fixture_changes WHERE start_time IS NOT NULL GROUP BY fixture_id
    )
    SELECT p.source, p.bookmaker, p.fixture_id, p.market_id, p.outcome_id, p.player_id, p.line, p.side,
           s.start_time,
           min(p.received_at) AS opening_at,
           (array_agg(p.price ORDER BY p.received_at, p.raw_id))[1] AS opening_price,
           max(p.received_at) FILTER (WHERE p.received_at < s.start_time) AS closing_at,
           (array_agg(p.price ORDER BY p.received_at DESC, p.raw_id DESC)
                FILTER (WHERE p.received_at < s.start_time))[1] AS closing_price,
           count(*) AS ticks
    FROM price_ticks AS p LEFT JOIN starts AS s ON s.fixture_id = p.fixture_id
    WHERE p.price IS NOT NULL
    GROUP BY p.source, p.bookmaker, p.fixture_id, p.market_id, p.outcome_id, p.player_id, p.line, p.side,
             s.start_time""",
    "COMMENT ON VIEW opening_closing_lines IS 'First price of each selection and the last price before the "
    "fixture''s start time (the latest start_time any feed gave for that fixture id); closing is null while the "
    "start time is unknown or no price came before it.'",
    """CREATE FUNCTION price_candles(width interval)
    RETURNS TABLE (bucket timestamptz, source text, bookmaker text, fixture_id text, market_id text,
        outcome_id text, player_id text, line numeric, side text, open double precision, high double precision,
        low double precision, close double precision, ticks bigint)
    LANGUAGE sql STABLE AS $body$
    SELECT to_timestamp(floor(extract(epoch FROM received_at) / extract(epoch FROM width))
                        * extract(epoch FROM width)) AS bucket,
           source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
           (array_agg(price ORDER BY received_at, raw_id))[1] AS open, max(price) AS high, min(price) AS low,
           (array_agg(price ORDER BY received_at DESC, raw_id DESC))[1] AS close, count(*) AS ticks
    FROM price_ticks WHERE price IS NOT NULL
    GROUP BY 1, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
    $body$""",
    "COMMENT ON FUNCTION price_candles(interval) IS 'Open/high/low/close per selection in buckets of any width, "
    "aligned on the Unix epoch.'",
    """CREATE VIEW market_overround AS
    WITH latest AS (
        SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
               CASE WHEN price > 0 AND active IS NOT FALSE THEN 1 / price ELSE 0 END AS prob
        FROM price_ticks
    ), deltas AS (
        SELECT *, prob - coalesce(lag(prob) OVER (PARTITION BY source, bookmaker, fixture_id, market_id,
               outcome_id, player_id, line, side ORDER BY received_at, raw_id), 0) AS d_prob,
               sign(prob) - coalesce(sign(lag(prob) OVER (PARTITION BY source, bookmaker, fixture_id, market_id,
                   outcome_id, player_id, line, side ORDER BY received_at, raw_id)), 0)
                   AS d_priced
        FROM latest
    ), running AS (
        SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, side,
               sum(d_prob) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, side ORDER BY received_at,
                   raw_id) AS book,
               sum(d_priced) OVER (PARTITION BY source, bookmaker, fixture_id, market_id,
                   side ORDER BY received_at, raw_id) AS outcomes
        FROM deltas
    )
    SELECT DISTINCT received_at, raw_id, source, bookmaker, fixture_id, market_id, side,
           CAST(outcomes AS integer) AS outcomes_priced,
           book AS book_sum, book - 1 AS overround
    FROM running""",
    "COMMENT ON VIEW market_overround IS 'After every frame that changed a market: how many of its outcomes are "
    "priced, the sum of their implied probabilities, and the overround (sum - 1: the bookmaker''s margin). Compare "
    "only rows where outcomes_priced is the market''s full outcome count (in player markets every player is an "
    "outcome).'",
    """CREATE FUNCTION steam_moves(min_move double precision, min_books integer, span interval)
    RETURNS TABLE (fixture_id text, market_id text, outcome_id text, player_id text, line numeric, side text,
        direction text, started_at timestamptz, first_bookmaker text, first_source text,
        first_from double precision, first_to double precision, bookmakers bigint, movers text[],
        ended_at timestamptz)
    LANGUAGE sql STABLE AS $body$
    WITH moves AS (
        SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
               prev_price, price, move_pct, sign(move_pct) AS direction
        FROM price_history WHERE abs(move_pct) >= min_move
    ), firsts AS (
        SELECT m.* FROM moves AS m
        WHERE NOT EXISTS (
            SELECT 1 FROM moves AS e
            WHERE e.fixture_id = m.fixture_id AND e.market_id = m.market_id AND e.outcome_id = m.outcome_id
              AND e.player_id IS NOT DISTINCT FROM m.player_id AND e.line IS NOT DISTINCT FROM m.line
              AND e.side IS NOT DISTINCT FROM m.side AND e.direction = m.direction
              AND e.received_at >= m.received_at - span
              AND (e.received_at < m.received_at OR (e.received_at = m.received_at AND e.raw_id < m.raw_id)))
    )
    SELECT f.fixture_id, f.market_id, f.outcome_id, f.player_id, f.line, f.side,
           CASE WHEN f.direction < 0 THEN 'shortened' ELSE 'drifted' END AS direction,
           f.received_at AS started_at, f.bookmaker AS first_bookmaker, f.source AS first_source,
           f.prev_price AS first_from, f.price AS first_to,
           count(DISTINCT o.bookmaker) AS bookmakers,
           array_agg(o.bookmaker ORDER BY o.received_at, o.raw_id) AS movers,
           max(o.received_at) AS ended_at
    FROM firsts AS f JOIN moves AS o
      ON o.fixture_id = f.fixture_id AND o.market_id = f.market_id AND o.outcome_id = f.outcome_id
     AND o.player_id IS NOT DISTINCT FROM f.player_id AND o.line IS NOT DISTINCT FROM f.line
     AND o.side IS NOT DISTINCT FROM f.side AND o.direction = f.direction
     AND o.received_at >= f.received_at AND o.received_at <= f.received_at + span
    GROUP BY f.fixture_id, f.market_id, f.outcome_id, f.player_id, f.line, f.side, f.direction, f.received_at,
             f.raw_id, f.bookmaker, f.source, f.prev_price, f.price
    HAVING count(DISTINCT o.bookmaker) >= min_books
    $body$""",
    "COMMENT ON FUNCTION steam_moves(double precision, integer, interval) IS 'Steam: the same selection moving the "
    "same way by at least `min_move` (0.05 = 5 %) at `min_books` or more bookmakers within `span` of the first "
    "mover. One row per episode, started by a move no other qualifying move preceded within the window; `movers` "
    "lists the bookmakers in order.'",
)
DROP: tuple[str, ...] = (  # in reverse order
    "DROP FUNCTION IF EXISTS steam_moves(double precision, integer, interval)",
    "DROP VIEW IF EXISTS market_overround",
    "DROP FUNCTION IF EXISTS price_candles(interval)",
    "DROP VIEW IF EXISTS opening_closing_lines",
    "DROP FUNCTION IF EXISTS prices_as_of(timestamptz)",
    "DROP VIEW IF EXISTS price_history",
)
VIEWS = "price_history, opening_closing_lines, market_overround"


def upgrade() -> None:
    for statement in CREATE:
        op.execute(text(statement))
    for role in ("warehouse_reader", "warehouse_writer"):
        op.execute(text(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
                        f" GRANT SELECT ON {VIEWS} TO {role}; END IF; END $$"))


def downgrade() -> None:
    for statement in DROP:
        op.execute(text(statement))
