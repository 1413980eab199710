"""Rows from REST answers, and the analysis relations V2.

After a gap the collector fetches the vendor's state over REST (issue 16); the rows it derives are
told apart by a last column `origin` in every table that takes rows derived from frames (null:
pushed; 'snapshot': the state fetched after a gap; 'backfill': the vendor's history of the gap).
price_ticks gets a partial index on its REST rows, so the relations check only those against the
stream. The analysis relations become V2, written out below: every one is built on the new view
observed_ticks, where a snapshot never rolls back a newer pushed price, and steam_moves names each
bookmaker once in `movers` (with movers_at / movers_from / movers_to).
Without TimescaleDB the 1-minute candle view follows; TimescaleDB's continuous aggregate cannot be
built on a view with subqueries and keeps reading price_ticks.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from types import ModuleType

from alembic import context, op
from sqlalchemy import text

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

# The relations V2 as this revision creates them. Frozen: never edit; a change to a relation is a
# new migration (warehouse.analysis.relations holds the current set: tests/test_schema_copies.py).
CREATE: tuple[str, ...] = (  # each relation, then its comment
    """CREATE VIEW observed_ticks AS
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
           side, price, active, status, max_stake, attrs, origin
    FROM price_ticks WHERE origin IS NULL
    UNION ALL
    SELECT s.received_at, s.source, s.raw_id, s.source_ts, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id,
           s.player_id, s.line, s.side, s.price, s.active, s.status, s.max_stake, s.attrs, s.origin
    FROM price_ticks AS s
    WHERE s.origin = 'snapshot' AND NOT EXISTS (
        SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                       WHERE e.fixture_id = s.fixture_id AND e.market_id = s.market_id
                         AND e.outcome_id = s.outcome_id AND e.source = s.source
                         AND e.bookmaker IS NOT DISTINCT FROM s.bookmaker
                         AND e.player_id IS NOT DISTINCT FROM s.player_id
                         AND e.line IS NOT DISTINCT FROM s.line AND e.side IS NOT DISTINCT FROM s.side
                         AND (e.origin IS NULL OR e.origin = 'snapshot')
                         AND e.received_at <= s.received_at AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                       ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
        WHERE before.source_ts >= s.source_ts)""",
    "COMMENT ON VIEW observed_ticks IS 'price_ticks as the collector observed them, the base of every other "
    "relation: pushed ticks, and snapshot ticks (fetched over REST after a gap, dated when the request was sent) "
    "unless the tick of the selection just before already carried a vendor time (source_ts) at least as new. "
    "Backfill ticks (the vendor''s history of a gap) are left out.'",
    """CREATE VIEW price_history AS
    SELECT received_at, source_ts, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
           price, prev_price,
           price - prev_price AS move,
           price / nullif(prev_price, 0) - 1 AS move_pct,
           1 / nullif(price, 0) AS implied_prob,
           active, status, max_stake, raw_id, origin
    FROM (SELECT *, lag(price) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id,
          line, side ORDER BY received_at, raw_id) AS prev_price
          FROM observed_ticks WHERE price IS NOT NULL) AS priced""",
    "COMMENT ON VIEW price_history IS 'Every price of a selection with the price before it, the move (absolute and "
    "relative) and the implied probability 1/price. Ticks without a price (suspensions, locked odds) are left out. "
    "Built on observed_ticks; origin is ''snapshot'' for a price fetched after a gap.'",
    """CREATE FUNCTION prices_as_of(as_of timestamptz)
    RETURNS TABLE (received_at timestamptz, source_ts timestamptz, source text, bookmaker text, fixture_id text,
        market_id text, outcome_id text, player_id text, line numeric, side text, price double precision,
        active boolean, status text, max_stake numeric, raw_id bigint, origin text)
    LANGUAGE sql STABLE AS $body$
    SELECT DISTINCT ON (source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side) received_at,
           source_ts, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, price, active,
           status, max_stake, raw_id,
           origin
    FROM observed_ticks WHERE received_at <= as_of
    ORDER BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at DESC,
        raw_id DESC
    $body$""",
    "COMMENT ON FUNCTION prices_as_of(timestamptz) IS 'The last tick of every selection at or before `as_of` "
    "(price null: suspended at that time). Built on observed_ticks: a snapshot never rolls back a newer pushed "
    "price.'",
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
    FROM observed_ticks AS p LEFT JOIN starts AS s ON s.fixture_id = p.fixture_id
    WHERE p.price IS NOT NULL
    GROUP BY p.source, p.bookmaker, p.fixture_id, p.market_id, p.outcome_id, p.player_id, p.line, p.side,
             s.start_time""",
    "COMMENT ON VIEW opening_closing_lines IS 'First price of each selection and the last price before the "
    "fixture''s start time (the latest start_time any feed gave for that fixture id); closing is null while the "
    "start time is unknown or no price came before it. Built on observed_ticks.'",
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
    FROM observed_ticks WHERE price IS NOT NULL
    GROUP BY 1, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
    $body$""",
    "COMMENT ON FUNCTION price_candles(interval) IS 'Open/high/low/close per selection in buckets of any width, "
    "aligned on the Unix epoch. Built on observed_ticks.'",
    """CREATE VIEW market_overround AS
    WITH latest AS (
        SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
               CASE WHEN price > 0 AND active IS NOT FALSE THEN 1 / price ELSE 0 END AS prob
        FROM observed_ticks
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
    "outcome). Built on observed_ticks.'",
    """CREATE FUNCTION steam_moves(min_move double precision, min_books integer, span interval)
    RETURNS TABLE (fixture_id text, market_id text, outcome_id text, player_id text, line numeric, side text,
        direction text, started_at timestamptz, first_bookmaker text, first_source text,
        first_from double precision, first_to double precision, bookmakers bigint, movers text[],
        ended_at timestamptz, movers_at timestamptz[], movers_from double precision[], movers_to double precision[])
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
    ), episode_moves AS (
        SELECT f.fixture_id, f.market_id, f.outcome_id, f.player_id, f.line, f.side, f.direction,
               f.received_at AS started_at, f.raw_id AS first_raw_id, f.bookmaker AS first_bookmaker,
               f.source AS first_source, f.prev_price AS first_from, f.price AS first_to,
               o.bookmaker AS mover, o.received_at AS moved_at, o.raw_id AS moved_raw_id,
               o.prev_price AS moved_from, o.price AS moved_to,
               row_number() OVER (PARTITION BY f.fixture_id, f.market_id, f.outcome_id, f.player_id, f.line,
                   f.side, f.direction, f.received_at, f.raw_id, f.bookmaker, f.source,
                   o.bookmaker ORDER BY o.received_at, o.raw_id) AS nth
        FROM firsts AS f JOIN moves AS o
          ON o.fixture_id = f.fixture_id AND o.market_id = f.market_id AND o.outcome_id = f.outcome_id
         AND o.player_id IS NOT DISTINCT FROM f.player_id AND o.line IS NOT DISTINCT FROM f.line
         AND o.side IS NOT DISTINCT FROM f.side AND o.direction = f.direction
         AND o.received_at >= f.received_at AND o.received_at <= f.received_at + span
    )
    SELECT fixture_id, market_id, outcome_id, player_id, line, side,
           CASE WHEN direction < 0 THEN 'shortened' ELSE 'drifted' END AS direction,
           started_at, first_bookmaker, first_source, first_from, first_to,
           count(DISTINCT mover) AS bookmakers,
           array_agg(mover ORDER BY moved_at, moved_raw_id, mover) FILTER (WHERE nth = 1) AS movers,
           max(moved_at) AS ended_at,
           array_agg(moved_at ORDER BY moved_at, moved_raw_id, mover) FILTER (WHERE nth = 1) AS movers_at,
           array_agg(moved_from ORDER BY moved_at, moved_raw_id, mover) FILTER (WHERE nth = 1) AS movers_from,
           array_agg(moved_to ORDER BY moved_at, moved_raw_id, mover) FILTER (WHERE nth = 1) AS movers_to
    FROM episode_moves
    GROUP BY fixture_id, market_id, outcome_id, player_id, line, side, direction, started_at, first_raw_id,
             first_bookmaker, first_source, first_from, first_to
    HAVING count(DISTINCT mover) >= min_books
    $body$""",
    "COMMENT ON FUNCTION steam_moves(double precision, integer, interval) IS 'Steam: the same selection moving the "
    "same way by at least `min_move` (0.05 = 5 %) at `min_books` or more bookmakers within `span` of the first "
    "mover. One row per episode, started by a move no other qualifying move preceded within the window; `movers` "
    "names each bookmaker once, in the order it first moved, and movers_at / movers_from / movers_to give the time "
    "and prices of that first move.'",
)
DROP: tuple[str, ...] = (  # in reverse order
    "DROP FUNCTION IF EXISTS steam_moves(double precision, integer, interval)",
    "DROP VIEW IF EXISTS market_overround",
    "DROP FUNCTION IF EXISTS price_candles(interval)",
    "DROP VIEW IF EXISTS opening_closing_lines",
    "DROP FUNCTION IF EXISTS prices_as_of(timestamptz)",
    "DROP VIEW IF EXISTS price_history",
    "DROP VIEW IF EXISTS observed_ticks",
)
VIEWS = "observed_ticks, price_history, opening_closing_lines, market_overround"


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


def _v1() -> ModuleType:
    """Migration 0002, which wrote out the relations (V1) this one replaces, and restores on downgrade."""
    return context.script.get_revision("0002").module


def _install(create: tuple[str, ...], views: str) -> None:
    for statement in create:
        _sql(statement)
    for role in ("warehouse_reader", "warehouse_writer"):
        _sql(f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
             f" GRANT SELECT ON {views} TO {role}; END IF; END $$")


def upgrade() -> None:
    for table in ORIGIN_TABLES:
        _sql(f"ALTER TABLE {table} ADD COLUMN origin text")
        _sql(f"COMMENT ON COLUMN {table}.origin IS '{ORIGIN_COMMENT.replace(chr(39), chr(39) * 2)}'")
    for table, (name, columns) in REST_INDEXES.items():
        _sql(f"CREATE INDEX {name} ON {table} ({', '.join(columns)}) WHERE origin IS NOT NULL")
    for statement in _v1().DROP:
        _sql(statement)
    _install(CREATE, VIEWS)
    if _native():
        _candles_view("observed_ticks")


def downgrade() -> None:
    if _native():
        _candles_view("price_ticks")
    for statement in DROP:
        _sql(statement)
    for name, _ in REST_INDEXES.values():
        _sql(f"DROP INDEX {name}")
    for table in ORIGIN_TABLES:  # before V1 is back: its price_history reads `*` of price_ticks
        _sql(f"ALTER TABLE {table} DROP COLUMN origin")
    v1 = _v1()
    _install(v1.CREATE, v1.VIEWS)
