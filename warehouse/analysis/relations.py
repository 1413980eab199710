"""Line-movement SQL, written once for both engines.

Each relation is plain SQL that PostgreSQL and DuckDB both accept. On PostgreSQL a migration creates
it as a view or a SQL function, holding its text as written then (0002: the first set; 0007: the
current one); over Parquet and on the query surface the same text becomes a DuckDB view or table
macro (`CURRENT`), so a query written against one runs unchanged against the other.

To change a relation: edit it here and add a migration holding the new text (`postgres_ddl`,
`postgres_comment` and `postgres_drop` write it); tests/test_schema_copies.py holds the newest
migration equal to `CURRENT`. Time is `received_at`: one clock for every feed (docs/resync.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from warehouse.records import EVENT_CONNECT, EVENT_DISCONNECT

# One selection: the thing a price is for, as quoted by one bookmaker on one feed.
SELECTION = "source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side"
# One market as one bookmaker quotes it (handicap lines are separate market ids on every feed).
MARKET = "source, bookmaker, fixture_id, market_id, side"
# Ties in received_at (several selections in one frame) are ordered by the frame they came in.
IN_ORDER = "received_at, raw_id"


@dataclass(frozen=True)
class Relation:
    """A view (no parameters) or a set-returning function / table macro."""

    name: str
    body: str
    params: tuple[tuple[str, str], ...] = ()  # (name, PostgreSQL type); DuckDB macros are untyped
    returns: str = ""  # PostgreSQL RETURNS clause of a function
    doc: str = ""
    duckdb_body: str | None = None  # the same rows written for DuckDB's planner, where `body` suits it badly


# Every relation reads price_ticks as observed (snapshot and backfill rows: docs/resync.md).
TICK_COLUMNS = ("received_at", "source", "raw_id", "source_ts", "bookmaker", "fixture_id", "market_id", "outcome_id",
                "player_id", "line", "side", "price", "active", "status", "max_stake", "attrs", "origin")


def _same_selection(a: str, b: str) -> str:
    return " AND ".join([f"{b}.{c} = {a}.{c}" for c in ("fixture_id", "market_id", "outcome_id", "source")]
                        + [f"{b}.{c} IS NOT DISTINCT FROM {a}.{c}" for c in ("bookmaker", "player_id", "line", "side")])


OBSERVED_TICKS = Relation(
    "observed_ticks",
    f"""
    SELECT {", ".join(TICK_COLUMNS)} FROM price_ticks WHERE origin IS NULL
    UNION ALL
    SELECT {", ".join(f"s.{c}" for c in TICK_COLUMNS)} FROM price_ticks AS s
    WHERE s.origin = 'snapshot' AND NOT EXISTS (
        SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                       WHERE {_same_selection("s", "e")} AND (e.origin IS NULL OR e.origin = 'snapshot')
                         AND e.received_at <= s.received_at AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                       ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
        WHERE before.source_ts >= s.source_ts)
    """,
    # DuckDB turns the correlated NOT EXISTS into a join that reads every hot price row through the
    # postgres scanner before a fixture filter applies (~1 s for a line movement over 600,000 rows,
    # bench/lifecycle.py). The same rule as a window: the row just before a snapshot row, among pushed
    # and snapshot rows, is its lag; a filter on the selection passes through the window to the index.
    duckdb_body=f"""
    SELECT {", ".join(TICK_COLUMNS)} FROM price_ticks WHERE origin IS NULL
    UNION ALL
    SELECT {", ".join(TICK_COLUMNS)}
    FROM (SELECT *, lag(source_ts) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER}) AS before_ts
          FROM price_ticks WHERE origin IS NULL OR origin = 'snapshot') AS o
    WHERE origin = 'snapshot' AND NOT coalesce(before_ts >= source_ts, false)
    """,
    doc="price_ticks as the collector observed them, the base of every other relation: pushed ticks, and "
    "snapshot ticks (fetched over REST after a gap, dated when the request was sent) unless the tick of the "
    "selection just before already carried a vendor time (source_ts) at least as new. Backfill ticks (the "
    "vendor's history of a gap) are left out.",
)

PRICE_HISTORY = Relation(
    "price_history",
    f"""
    SELECT received_at, source_ts, {SELECTION}, price, prev_price,
           price - prev_price AS move,
           price / nullif(prev_price, 0) - 1 AS move_pct,
           1 / nullif(price, 0) AS implied_prob,
           active, status, max_stake, raw_id, origin
    FROM (SELECT *, lag(price) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER}) AS prev_price
          FROM observed_ticks WHERE price IS NOT NULL) AS priced
    """,
    doc="Every price of a selection with the price before it, the move (absolute and relative) and the "
    "implied probability 1/price. Ticks without a price (suspensions, locked odds) are left out. "
    "Built on observed_ticks; origin is 'snapshot' for a price fetched after a gap.",
)

PRICES_AS_OF = Relation(
    "prices_as_of",
    f"""
    SELECT DISTINCT ON ({SELECTION}) received_at, source_ts, {SELECTION}, price, active, status, max_stake, raw_id,
           origin
    FROM observed_ticks WHERE received_at <= as_of
    ORDER BY {SELECTION}, received_at DESC, raw_id DESC
    """,
    params=(("as_of", "timestamptz"),),
    returns="TABLE (received_at timestamptz, source_ts timestamptz, source text, bookmaker text, fixture_id text,"
    " market_id text, outcome_id text, player_id text, line numeric, side text, price double precision,"
    " active boolean, status text, max_stake numeric, raw_id bigint, origin text)",
    doc="The last tick of every selection at or before `as_of` (price null: suspended at that time). "
    "Built on observed_ticks: a snapshot never rolls back a newer pushed price.",
)

OPENING_CLOSING_LINES = Relation(
    "opening_closing_lines",
    """
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
             s.start_time
    """,
    doc="First price of each selection and the last price before the fixture's start time (the latest "
    "start_time any feed gave for that fixture id); closing is null while the start time is unknown or "
    "no price came before it. Built on observed_ticks.",
)

PRICE_CANDLES = Relation(
    "price_candles",
    f"""
    SELECT to_timestamp(floor(extract(epoch FROM received_at) / extract(epoch FROM width))
                        * extract(epoch FROM width)) AS bucket,
           {SELECTION},
           (array_agg(price ORDER BY {IN_ORDER}))[1] AS open, max(price) AS high, min(price) AS low,
           (array_agg(price ORDER BY received_at DESC, raw_id DESC))[1] AS close, count(*) AS ticks
    FROM observed_ticks WHERE price IS NOT NULL
    GROUP BY 1, {SELECTION}
    """,
    params=(("width", "interval"),),
    returns="TABLE (bucket timestamptz, source text, bookmaker text, fixture_id text, market_id text,"
    " outcome_id text, player_id text, line numeric, side text, open double precision, high double precision,"
    " low double precision, close double precision, ticks bigint)",
    doc="Open/high/low/close per selection in buckets of any width, aligned on the Unix epoch. Built on "
    "observed_ticks.",
)

# Overround over time: a running sum of each selection's change in implied probability gives the
# sum of the latest implied probabilities of the market's outcomes after every frame, in one pass.
MARKET_OVERROUND = Relation(
    "market_overround",
    f"""
    WITH latest AS (
        SELECT received_at, raw_id, {SELECTION},
               CASE WHEN price > 0 AND active IS NOT FALSE THEN 1 / price ELSE 0 END AS prob
        FROM observed_ticks
    ), deltas AS (
        SELECT *, prob - coalesce(lag(prob) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER}), 0) AS d_prob,
               sign(prob) - coalesce(sign(lag(prob) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER})), 0)
                   AS d_priced
        FROM latest
    ), running AS (
        SELECT received_at, raw_id, {MARKET},
               sum(d_prob) OVER (PARTITION BY {MARKET} ORDER BY {IN_ORDER}) AS book,
               sum(d_priced) OVER (PARTITION BY {MARKET} ORDER BY {IN_ORDER}) AS outcomes
        FROM deltas
    )
    SELECT DISTINCT received_at, raw_id, {MARKET}, CAST(outcomes AS integer) AS outcomes_priced,
           book AS book_sum, book - 1 AS overround
    FROM running
    """,
    doc="After every frame that changed a market: how many of its outcomes are priced, the sum of their "
    "implied probabilities, and the overround (sum - 1: the bookmaker's margin). Compare only rows "
    "where outcomes_priced is the market's full outcome count (in player markets every player is an outcome). "
    "Built on observed_ticks.",
)

# One row per mover of an episode first (its first qualifying move: row_number 1), then the
# episode: each bookmaker once in `movers`, in the order it first moved, with the time and the
# prices of that move in the parallel arrays movers_at / movers_from / movers_to.
_EPISODE = ("f.fixture_id, f.market_id, f.outcome_id, f.player_id, f.line, f.side, f.direction, f.received_at,"
            " f.raw_id, f.bookmaker, f.source")
_FIRST_MOVES = "ORDER BY moved_at, moved_raw_id, mover) FILTER (WHERE nth = 1)"  # one frame may move several
STEAM_MOVES = Relation(
    "steam_moves",
    f"""
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
               row_number() OVER (PARTITION BY {_EPISODE}, o.bookmaker ORDER BY o.received_at, o.raw_id) AS nth
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
           array_agg(mover {_FIRST_MOVES} AS movers,
           max(moved_at) AS ended_at,
           array_agg(moved_at {_FIRST_MOVES} AS movers_at,
           array_agg(moved_from {_FIRST_MOVES} AS movers_from,
           array_agg(moved_to {_FIRST_MOVES} AS movers_to
    FROM episode_moves
    GROUP BY fixture_id, market_id, outcome_id, player_id, line, side, direction, started_at, first_raw_id,
             first_bookmaker, first_source, first_from, first_to
    HAVING count(DISTINCT mover) >= min_books
    """,
    params=(("min_move", "double precision"), ("min_books", "integer"), ("span", "interval")),
    returns="TABLE (fixture_id text, market_id text, outcome_id text, player_id text, line numeric, side text,"
    " direction text, started_at timestamptz, first_bookmaker text, first_source text,"
    " first_from double precision, first_to double precision, bookmakers bigint, movers text[],"
    " ended_at timestamptz, movers_at timestamptz[], movers_from double precision[], movers_to double precision[])",
    doc="Steam: the same selection moving the same way by at least `min_move` (0.05 = 5 %) at `min_books` "
    "or more bookmakers within `span` of the first mover. One row per episode, started by a move no "
    "other qualifying move preceded within the window; `movers` names each bookmaker once, in the order it "
    "first moved, and movers_at / movers_from / movers_to give the time and prices of that first move.",
)

# The relations of today, in the order they are created: observed_ticks first, the others are built on it.
CURRENT: tuple[Relation, ...] = (
    OBSERVED_TICKS, PRICE_HISTORY, PRICES_AS_OF, OPENING_CLOSING_LINES, PRICE_CANDLES, MARKET_OVERROUND, STEAM_MOVES,
)


def postgres_ddl(relation: Relation) -> str:
    if not relation.params:
        return f"CREATE VIEW {relation.name} AS {relation.body}"
    params = ", ".join(f"{name} {kind}" for name, kind in relation.params)
    return (f"CREATE FUNCTION {relation.name}({params}) RETURNS {relation.returns} LANGUAGE sql STABLE"
            f" AS $body$ {relation.body} $body$")


def postgres_drop(relation: Relation) -> str:
    if not relation.params:
        return f"DROP VIEW IF EXISTS {relation.name}"
    kinds = ", ".join(kind for _, kind in relation.params)
    return f"DROP FUNCTION IF EXISTS {relation.name}({kinds})"


def postgres_comment(relation: Relation) -> str | None:
    if not relation.doc:
        return None
    kind = "FUNCTION" if relation.params else "VIEW"
    target = relation.name + (f"({', '.join(k for _, k in relation.params)})" if relation.params else "")
    return f"COMMENT ON {kind} {target} IS '{relation.doc.replace(chr(39), chr(39) * 2)}'"


def duckdb_ddl(relation: Relation) -> str:
    body = relation.duckdb_body or relation.body
    if not relation.params:
        return f"CREATE OR REPLACE VIEW {relation.name} AS {body}"
    params = ", ".join(name for name, _ in relation.params)
    return f"CREATE OR REPLACE MACRO {relation.name}({params}) AS TABLE {body}"


# Queries built on the relations, for the CLI and notebooks (parameters as %s).
# The chart's rows (warehouse.analysis.plot), all for one fixture's market:
# every price and whether it was open for bets, as observed (observed_ticks: a resync's snapshot
# never rolls a price back; price_history's rows, without the window function neither the chart nor
# DuckDB's planner needs)…
LINE_MOVEMENT = (
    "SELECT received_at, source, coalesce(bookmaker, source) AS bookmaker, outcome_id, player_id,"
    " CAST(line AS double precision) AS line, side, price, active"
    " FROM observed_ticks WHERE fixture_id = %s AND market_id = %s AND price IS NOT NULL"
    " ORDER BY received_at, raw_id"
)
# …the names a feed gives its outcomes (Saba's keyName: "Home", "Draw", "Away")…
OUTCOME_NAMES = (
    "SELECT outcome_id, max(attrs->>'keyName') AS name FROM price_ticks"  # (…) IS: DuckDB binds IS tighter
    " WHERE fixture_id = %s AND market_id = %s AND (attrs->>'keyName') IS NOT NULL GROUP BY outcome_id"
)
# …the fixture's teams where a feed names them (Saba's teamInfo) and its start times…
FIXTURE_FACTS = (
    "SELECT received_at, start_time, coalesce(changes->'teamInfo'->>'homeName', changes->>'participant1Name') AS home,"
    " coalesce(changes->'teamInfo'->>'awayName', changes->>'participant2Name') AS away"
    " FROM fixture_changes WHERE fixture_id = %s AND bookmaker IS NULL ORDER BY received_at"
)
# …its scores, as every feed reported them…
SCORES = (
    "SELECT received_at, home_score, away_score, minute FROM score_changes"
    " WHERE fixture_id = %s AND home_score IS NOT NULL AND away_score IS NOT NULL ORDER BY received_at"
)
# …and when the feeds that priced it were not listening: a disconnect opens a gap, the next connect
# of the same source closes it (as in warehouse.collect.status); `ended` is null while still open.
GAPS = f"""
SELECT source, received_at AS started,
       (SELECT min(c.received_at) FROM collector_events AS c
        WHERE c.source = e.source AND c.event = '{EVENT_CONNECT}' AND c.received_at > e.received_at) AS ended
FROM (SELECT source, event, received_at,
             lag(event) OVER (PARTITION BY source ORDER BY received_at) AS before
      FROM collector_events
      WHERE event IN ('{EVENT_CONNECT}', '{EVENT_DISCONNECT}')
        AND source IN (SELECT DISTINCT source FROM price_ticks WHERE fixture_id = %s AND market_id = %s)) AS e
WHERE event = '{EVENT_DISCONNECT}' AND (before IS NULL OR before = '{EVENT_CONNECT}')
ORDER BY started
"""
# Busiest by pushed ticks (a resync's snapshot rows say nothing about how busy a market is).
BUSIEST_MARKETS = (
    "SELECT fixture_id, market_id, count(DISTINCT coalesce(bookmaker, source)) AS bookmakers, count(*) AS ticks"
    " FROM price_ticks WHERE price IS NOT NULL AND origin IS NULL GROUP BY fixture_id, market_id"
    " ORDER BY bookmakers DESC, ticks DESC, fixture_id, market_id LIMIT %s"
)
