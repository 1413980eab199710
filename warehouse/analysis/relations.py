"""Line-movement SQL, written once for both engines.

Each relation is plain SQL that PostgreSQL and DuckDB both accept. On PostgreSQL a migration creates
it as a view or a SQL function, holding its text as written then (0002: the first set; 0007: the
second; 0010: what a trader acts on, docs/trading-relations.md; 0016: where `active` is whether a bet
could be placed, docs/availability.md; 0018: the current one, the same rows read and sorted less); over Parquet
and on the query surface the same text becomes a DuckDB view or table macro (`CURRENT`), so a query
written against one runs unchanged against the other.

To change a relation: edit it here and add a migration holding the new text (`postgres_ddl`,
`postgres_comment` and `postgres_drop` write it); tests/test_schema_copies.py holds the newest
migration equal to `CURRENT`. Time is `received_at`: one clock for every feed (docs/resync.md).
"""

from __future__ import annotations

from collections.abc import Callable
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
    """A view (no parameters), a set-returning function / table macro, or (`scalar`) a function of
    values / scalar macro."""

    name: str
    body: str
    # (name, PostgreSQL type) or (name, PostgreSQL type, default): DuckDB macros are untyped; a
    # default is SQL both engines accept, and a caller may leave that parameter and those after it out
    params: tuple[tuple[str, ...], ...] = ()
    returns: str = ""  # PostgreSQL RETURNS clause of a function
    doc: str = ""
    duckdb_body: str | None = None  # the same rows written for DuckDB's planner, where `body` suits it badly
    scalar: bool = False


# Every relation reads price_ticks as observed (snapshot and backfill rows: docs/resync.md).
TICK_COLUMNS = ("received_at", "source", "raw_id", "source_ts", "bookmaker", "fixture_id", "market_id", "outcome_id",
                "player_id", "line", "side", "price", "active", "status", "max_stake", "attrs", "origin")


def _same_selection(a: str, b: str) -> str:
    return " AND ".join([f"{b}.{c} = {a}.{c}" for c in ("fixture_id", "market_id", "outcome_id", "source")]
                        + [f"{b}.{c} IS NOT DISTINCT FROM {a}.{c}" for c in ("bookmaker", "player_id", "line", "side")])


def _last(partition: str, order: str = "received_at DESC, raw_id DESC") -> str:
    """The window that numbers each `partition`'s rows from the latest: keep `nth = 1`. Not DISTINCT ON,
    which DuckDB turns into a grouping that a filter on the partition's columns does not pass through
    (the fixture's rows would be read from every fixture's); PostgreSQL pushes it through either."""
    return f"row_number() OVER (PARTITION BY {partition} ORDER BY {order}) AS nth"


# Whether a bet can be placed at a price is decided at three levels (DESIGN rule 9, docs/availability.md):
# the price's own `active`, and the vendor's flags above it — a bookmaker on a fixture (OddsPapi's
# `suspended` and `bookmakerIsActive`: that bookmaker's fixture_changes rows) and a bookmaker's market
# (`marketActive`: market_changes). A flag holds what the latest row that carried it said (a partial
# update sends only the flag that changed). Derived here, from stored rows, not in the adapter: the
# state survives a restart and a replay from the middle of a connection, a lifted suspension reopens
# each selection at the last price it was sent, and rows stored before this was written count too.
_FLAG = "CASE ({json}->>'{key}') WHEN 'true' THEN {closed_if_true} WHEN 'false' THEN NOT {closed_if_true} END"
_BOOK_FLAGS = f"""(
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker,
               {_FLAG.format(json="changes", key="suspended", closed_if_true="true")} AS book_suspended,
               {_FLAG.format(json="changes", key="bookmakerIsActive", closed_if_true="false")} AS book_inactive
        FROM fixture_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND ((changes->>'suspended') IS NOT NULL OR (changes->>'bookmakerIsActive') IS NOT NULL){{upto}})"""
_MARKET_FLAGS = f"""(
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id,
               {_FLAG.format(json="attrs", key="marketActive", closed_if_true="false")} AS market_inactive
        FROM market_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND (attrs->>'marketActive') IS NOT NULL{{upto}})"""
# The last non-null value of a flag up to this row, in one pass: the row number doubled, plus the flag.
_LATEST_FLAG = ("coalesce(max(CASE WHEN {flag} IS NOT NULL THEN 2 * {n} + CASE WHEN {flag} THEN 1 ELSE 0 END END)"
                " OVER w % 2 = 1, false)")
# A selection's timeline in order: a frame's flags before its prices (they apply to them). tick_no (the
# ticks so far) first: it only grows along the timeline, so this is the order of received_at, raw_id,
# kind, and the windows after the one that groups by tick_no need no sort of their own.
_TIMELINE = f"PARTITION BY {SELECTION} ORDER BY tick_no, received_at, raw_id, kind"


def _observed(seen: Callable[[str], str], upto: str = "", latest: bool = False, overround: bool = False) -> str:
    """observed_ticks from `seen` (the rows the collector observed: pushed, and snapshot rows the
    stream had not overtaken) and the flags above them. Every flag row becomes, for each selection it
    covers that had a price before it, a row at the flag's frame with the selection's last price —
    kept where it changes whether the selection is open (and no price of it came in the same frame) —
    and every row's `active` is false while a flag above it is closed.

    `upto` (" AND received_at <= t") bounds every read: each window below only looks back (and `lead`
    at rows of the same frame), so the rows up to t are the same, and an as-of function reads history
    up to t only. `latest`: only each selection's last row (what prices_as_of gives), found in the
    timeline's own order (DISTINCT ON, or a row number from the latest, would sort the rows again).
    `overround`: instead of the rows, each one's change in implied probability (market_overround's)."""
    s = ", ".join(f"s.{c}" for c in SELECTION.split(", "))
    # The selections a flag may cover are read from price_ticks, not from `seen` (one that has only rows
    # `seen` leaves out gets no row: it has no price before the flag). Reading `seen` twice, DuckDB 1.5
    # fails under arbitrage_windows (an internal binder error, or a crash).
    selections = f"(SELECT DISTINCT {SELECTION} FROM price_ticks WHERE bookmaker IS NOT NULL{upto})"
    flags = f"""(
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, CAST(NULL AS text) AS market_id,
               book_suspended, book_inactive, CAST(NULL AS boolean) AS market_inactive
        FROM {_BOOK_FLAGS.format(upto=upto)} AS book
        UNION ALL
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id, NULL, NULL, market_inactive
        FROM {_MARKET_FLAGS.format(upto=upto)} AS market)"""
    # One join (the selections read once): a bookmaker's flag covers its every market, a market's its own.
    flagged = f"""(  -- one row per covered selection and frame
        SELECT {SELECTION}, received_at, raw_id, max(origin) AS origin, bool_or(book_suspended) AS book_suspended,
               bool_or(book_inactive) AS book_inactive, bool_or(market_inactive) AS market_inactive
        FROM (SELECT {s}, f.received_at, f.raw_id, f.origin, f.book_suspended, f.book_inactive, f.market_inactive
              FROM {flags} AS f
              JOIN {selections} AS s
                ON s.source = f.source AND s.fixture_id = f.fixture_id AND s.bookmaker = f.bookmaker
              WHERE f.market_id IS NULL OR f.market_id = s.market_id) AS covered
        GROUP BY {SELECTION}, received_at, raw_id)"""
    # Whether the flags in force close the selection after each of its flag frames (flag_no: the frame's
    # number among them), carried forward over these few rows rather than over every tick.
    closing = " OR ".join(_LATEST_FLAG.format(flag=flag, n="flag_no")
                          for flag in ("book_suspended", "book_inactive", "market_inactive"))
    flag_states = f"""(
        SELECT {SELECTION}, received_at, raw_id, origin, flag_no, {closing} AS closed
        FROM (SELECT *, row_number() OVER (PARTITION BY {SELECTION} ORDER BY received_at, raw_id) AS flag_no
              FROM {flagged} AS flagged) AS numbered
        WINDOW w AS (PARTITION BY {SELECTION} ORDER BY received_at, raw_id ROWS UNBOUNDED PRECEDING))"""
    # Along the timeline: the ticks so far, and the state of the latest flag frame (its number doubled,
    # plus whether it closed: the latest is the largest).
    numbered = f"""(
        SELECT *, sum(kind) OVER w AS tick_no,
               coalesce(max(2 * flag_no + CASE WHEN closed THEN 1 ELSE 0 END) OVER w % 2 = 1, false) AS closed_now
        FROM (SELECT {", ".join(TICK_COLUMNS)}, 1 AS kind, CAST(NULL AS bigint) AS flag_no,
                     CAST(NULL AS boolean) AS closed
              FROM ({seen(upto)}) AS seen
              UNION ALL
              SELECT received_at, source, raw_id, NULL, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
                     side, NULL, NULL, NULL, NULL, NULL, origin, 0, flag_no, closed
              FROM {flag_states} AS flag_states) AS timeline
        WINDOW w AS (PARTITION BY {SELECTION} ORDER BY received_at, raw_id, kind ROWS UNBOUNDED PRECEDING))"""
    # Each row with its selection's last tick (the first row of its tick_no group): price, own `active`.
    carried = f"""(
        SELECT *, CASE WHEN closed_now THEN false ELSE bool_or(active) OVER last END AS open,
               max(price) OVER last AS last_price, max(status) OVER last AS last_status,
               max(max_stake) OVER last AS last_stake
        FROM {numbered} AS numbered
        WINDOW last AS (PARTITION BY {SELECTION}, tick_no ORDER BY received_at, raw_id, kind
                        ROWS UNBOUNDED PRECEDING))"""
    columns = ("received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,"
               " side, last_price AS price, open AS active, last_status AS status, last_stake AS max_stake, attrs,"
               " origin")
    kept = ("kind = 1 OR (tick_no > 0 AND open IS DISTINCT FROM was"
            " AND NOT coalesce(next_at = received_at AND next_raw_id = raw_id, false))")
    frame = "lag(open) OVER w AS was, lead(received_at) OVER w AS next_at, lead(raw_id) OVER w AS next_raw_id"
    if overround:
        # Each kept row's change in implied probability from the kept row before it, for market_overround,
        # in the same pass. The row before is the timeline's, but for a tick after a flag row of its own
        # frame (not kept): the one before that. Every other row left out kept the probability of the row
        # before it (the same price and state, or no price yet).
        prob = "CASE WHEN last_price > 0 AND open IS NOT FALSE THEN 1 / last_price ELSE 0 END"
        return f"""
    SELECT received_at, raw_id, {MARKET}, prob - coalesce(prev_prob, 0) AS d_prob,
           sign(prob) - coalesce(sign(prev_prob), 0) AS d_priced
    FROM (SELECT *, CASE WHEN coalesce(prev_kind = 0 AND prev_at = received_at AND prev_raw_id = raw_id, false)
                         THEN prob_2 ELSE prob_1 END AS prev_prob
          FROM (SELECT *, {prob} AS prob, lag({prob}) OVER w AS prob_1, lag({prob}, 2) OVER w AS prob_2, {frame},
                       lag(kind) OVER w AS prev_kind, lag(received_at) OVER w AS prev_at,
                       lag(raw_id) OVER w AS prev_raw_id
                FROM {carried} AS carried
                WINDOW w AS ({_TIMELINE})) AS changed
          WHERE {kept}) AS moved
    """
    kept_rows = f"""
    SELECT {columns}{", tick_no, kind" if latest else ""}
    FROM (SELECT *, {frame}
          FROM {carried} AS carried
          WINDOW w AS ({_TIMELINE})) AS changed
    WHERE {kept}
    """
    if not latest:
        return kept_rows
    return f"""
    SELECT {", ".join(TICK_COLUMNS)}
    FROM (SELECT *, lead(received_at) OVER ({_TIMELINE}) AS later FROM ({kept_rows}) AS kept) AS ordered
    WHERE later IS NULL
    """


def _seen_postgres(upto: str) -> str:
    """The rows the collector observed, as PostgreSQL reads them: pushed rows, and each snapshot row
    unless the selection's row just before it (a probe of the (fixture_id, …) index) carried a vendor
    time at least as new."""
    return f"""
        SELECT {", ".join(TICK_COLUMNS)} FROM price_ticks WHERE origin IS NULL{upto}
        UNION ALL
        SELECT {", ".join(f"s.{c}" for c in TICK_COLUMNS)} FROM price_ticks AS s
        WHERE s.origin = 'snapshot'{upto} AND NOT EXISTS (
            SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                           WHERE {_same_selection("s", "e")} AND (e.origin IS NULL OR e.origin = 'snapshot')
                             AND e.received_at <= s.received_at
                             AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                           ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
            WHERE before.source_ts >= s.source_ts)"""


def _seen_duckdb(upto: str) -> str:
    """The same rows for DuckDB, which turns the correlated NOT EXISTS into a join that reads every hot
    price row through the postgres scanner before a fixture filter applies (~1 s for a line movement
    over 600,000 rows, bench/lifecycle.py). The same rule as a window, in one pass: the row just before
    a snapshot row, among pushed and snapshot rows, is its lag; pushed rows pass unchanged, and a filter
    on the selection passes through the window to the scan (a pushed branch beside it read a fixture
    twice)."""
    return f"""
        SELECT {", ".join(TICK_COLUMNS)}
        FROM (SELECT *, lag(source_ts) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER}) AS before_ts
              FROM price_ticks WHERE (origin IS NULL OR origin = 'snapshot'){upto}) AS o
        WHERE origin IS NULL OR NOT coalesce(before_ts >= source_ts, false)"""


def _latest_observed(duckdb: bool) -> str:
    """Each selection's last row of observed_ticks at or before `as_of` (an as-of function's parameter),
    every read bounded there."""
    return f"({_observed(_seen_duckdb if duckdb else _seen_postgres, ' AND received_at <= as_of', latest=True)})"


OBSERVED_TICKS = Relation(
    "observed_ticks",
    _observed(_seen_postgres),
    duckdb_body=_observed(_seen_duckdb),
    doc="price_ticks as the collector observed them, the base of every other relation: pushed ticks, and "
    "snapshot ticks (fetched over REST after a gap, dated when the request was sent) unless the tick of the "
    "selection just before already carried a vendor time (source_ts) at least as new. Backfill ticks (the "
    "vendor's history of a gap) are left out. active: a bet could be placed at the price — false while the "
    "vendor marks the price, its market (marketActive) or its bookmaker (suspended, bookmakerIsActive) closed; "
    "when such a flag changes, each selection it covers gets a row at that frame with its last price "
    "(raw_id: the frame of the flag).",
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
    SELECT received_at, source_ts, {SELECTION}, price, active, status, max_stake, raw_id, origin
    FROM {_latest_observed(duckdb=False)} AS latest
    """,
    params=(("as_of", "timestamptz"),),
    returns="TABLE (received_at timestamptz, source_ts timestamptz, source text, bookmaker text, fixture_id text,"
    " market_id text, outcome_id text, player_id text, line numeric, side text, price double precision,"
    " active boolean, status text, max_stake numeric, raw_id bigint, origin text)",
    duckdb_body=f"""
    SELECT received_at, source_ts, {SELECTION}, price, active, status, max_stake, raw_id, origin
    FROM {_latest_observed(duckdb=True)} AS latest
    """,
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

# Overround over time: a running sum of each selection's change in implied probability (taken in
# observed_ticks' own pass, _observed) gives the sum of the latest implied probabilities of the market's
# outcomes after every frame. The sums are equal on a frame's rows (peers in the window); the frame's
# last row in the window's own order stands for it (a DISTINCT would sort the rows again).
def _overround(seen: Callable[[str], str]) -> str:
    return f"""
    SELECT received_at, raw_id, {MARKET}, CAST(outcomes AS integer) AS outcomes_priced,
           book AS book_sum, book - 1 AS overround
    FROM (SELECT received_at, raw_id, {MARKET},
                 sum(d_prob) OVER frames AS book, sum(d_priced) OVER frames AS outcomes,
                 lead(received_at) OVER frames AS next_at, lead(raw_id) OVER frames AS next_raw_id
          FROM ({_observed(seen, overround=True)}) AS deltas
          WINDOW frames AS (PARTITION BY {MARKET} ORDER BY {IN_ORDER})) AS running
    WHERE next_at IS NULL OR next_at <> received_at OR next_raw_id IS DISTINCT FROM raw_id
    """


MARKET_OVERROUND = Relation(
    "market_overround",
    _overround(_seen_postgres),
    duckdb_body=_overround(_seen_duckdb),
    doc="After every frame that changed a market: how many of its outcomes are priced, the sum of their "
    "implied probabilities, and the overround (sum - 1: the bookmaker's margin). Compare only rows "
    "where outcomes_priced is the market's full outcome count (in player markets every player is an outcome). "
    "Built on observed_ticks.",
)

# -- What a trader acts on (migration 0010) --------------------------------------------------------
#
# The screen (best prices), the market without its margin (fair prices, consensus), who moves first
# (lead_lag), free money (arbitrage_windows), whether our own bets beat the close (closing_line_value),
# and steam that excludes the scoreboard. Relations that scan history take a window [since, until)
# (defaults: all of it) that bounds the rows read; a filter on fixture_id reaches the index in
# PostgreSQL and the postgres scan on the query surface. A CTE read twice is NOT MATERIALIZED, so
# that such a filter still reaches the table (PostgreSQL materialises it otherwise, and computes it
# for every fixture).

# An open price: a bet could be placed at it when it was observed. The one definition, read by
# every relation below through observed_quotes.is_open; `active` there is observed_ticks', false
# while the vendor's bookmaker or market flags are closed too (_observed, migration 0016).
OPEN_PRICE = "active IS NOT FALSE AND price IS NOT NULL AND price > 1"
# One outcome as every bookmaker of a feed quotes it (a selection without the bookmaker).
OUTCOME = "source, fixture_id, market_id, outcome_id, player_id, line, side"
# The same outcome across feeds, as steam and lead_lag compare them (vendors share fixture and outcome ids).
ACROSS = "fixture_id, market_id, outcome_id, player_id, line, side"
METHODS = ("multiplicative", "power", "shin")
# Bisection steps of margin_parameter: the bracket shrinks 2**60-fold, below a double's resolution.
BISECTION_STEPS = 60

OBSERVED_QUOTES = Relation(
    "observed_quotes",
    f"SELECT *, {OPEN_PRICE} AS is_open FROM observed_ticks",
    doc="observed_ticks with is_open: whether a bet could be placed at that price when it was observed (not "
    "marked inactive, and a price above 1). Every relation of migration 0010 reads open prices from here.",
)


def _same(a: str, b: str, columns: str = ACROSS) -> str:
    """Equal on `columns`; the nullable ones (player_id, line, side) null-safe."""
    nullable = ("player_id", "line", "side", "bookmaker")
    return " AND ".join(f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}" if c in nullable else f"{a}.{c} = {b}.{c}"
                        for c in columns.split(", "))


# Shin's z or the power method's k of one market: the root of sum(fair(implied_i)) = 1, by bisection.
# Shin (1993): fair_i = (sqrt(z^2 + 4 (1 - z) q_i^2 / B) - z) / (2 (1 - z)), q_i = 1/price_i, B = sum q_i,
# z in [0, 1) (the sum falls from sqrt(B) > 1 at z = 0 to below 1 as z nears 1). Power:
# fair_i = q_i^k, k in [0, ln(n) / -ln(max q)] (the sum is n at k = 0 and at most n max(q)^k <= 1 at the
# top). 60 halvings leave a bracket of 2^-60 of its width: z and k to the last bit of a double, and
# probabilities summing to 1 within 1e-15 (the tests hold it to 1e-12). Jullien and Salanié's fixed
# point (the `shin` package) needs hundreds of steps for the same.
_WIDTH = ("CASE WHEN method = 'shin' THEN CAST(1 AS double precision)"
          " ELSE greatest(CAST(1 AS double precision), ln({n}) / -ln({top})) END")
_MID = "(lo + width / 2)"
_D_WIDTH = f"({_WIDTH.format(n='len(implied)', top='list_max(implied)')})"
_D_MID = f"(lo + {_D_WIDTH} / pow(2, i + 1))"  # step i of DuckDB's list_reduce, lo its running answer
MARGIN_PARAMETER = Relation(
    "margin_parameter",
    f"""
    WITH RECURSIVE bisect(lo, width, step) AS (
        SELECT CAST(0 AS double precision),
               {_WIDTH.format(n="cardinality(implied)", top="(SELECT max(q) FROM unnest(implied) AS u(q))")}, 0
        UNION ALL
        SELECT CASE WHEN (SELECT CASE WHEN method = 'shin'
                                      THEN sum((sqrt({_MID} * {_MID} + 4 * (1 - {_MID}) * q * q / b.book) - {_MID})
                                               / (2 * (1 - {_MID})))
                                      ELSE sum(power(q, {_MID})) END
                          FROM unnest(implied) AS u(q), (SELECT sum(v) AS book FROM unnest(implied) AS t(v)) AS b) > 1
                    THEN {_MID} ELSE lo END,
               width / 2, step + 1
        FROM bisect WHERE step < {BISECTION_STEPS}
    )
    SELECT lo + width / 2 FROM bisect WHERE step = {BISECTION_STEPS}
    """,
    params=(("implied", "double precision[]"), ("method", "text")),
    returns="double precision",
    scalar=True,
    # The same bisection as one expression: DuckDB runs a correlated recursive query per market ~10x slower.
    duckdb_body=f"""
    list_reduce(range({BISECTION_STEPS}), (lo, i) -> CASE WHEN
        CASE WHEN method = 'shin'
             THEN list_sum(list_transform(implied, q -> (sqrt({_D_MID} * {_D_MID} + 4 * (1 - {_D_MID}) * q * q
                                                               / list_sum(implied)) - {_D_MID}) / (2 * (1 - {_D_MID}))))
             ELSE list_sum(list_transform(implied, q -> power(q, {_D_MID}))) END > 1
        THEN {_D_MID} ELSE lo END, CAST(0 AS DOUBLE)) + {_D_WIDTH} / pow(2, {BISECTION_STEPS + 1})
    """,
    doc="Shin's z (method 'shin') or the power method's k ('power') of one market whose outcomes' implied "
    "probabilities (1 / price) are `implied`: the root of sum(fair) = 1, by 60 steps of bisection (to the last "
    "bit of a double). fair_prices_as_of uses it.",
)


def _method_checked(method: str, relation: str) -> str:
    """True for a known method; otherwise the query fails naming the methods (no error() in PostgreSQL's SQL)."""
    known = ", ".join(f"'{m}'" for m in METHODS)
    return (f"CASE WHEN {method} IN ({known}) THEN true ELSE CAST('{relation}: method ' || {method} || ' is not one"
            f" of {', '.join(METHODS)}' AS integer) = 0 END")


def _fair(latest: str, method: str) -> str:
    """Each open selection of `latest` (one row per selection: SELECTION, received_at, price, is_open) in a
    complete market, with what taking the margin out by `method` needs (_FAIR_PROB of these): implied_prob,
    book_sum, method_parameter, and the market's outcomes. A market (MARKET) is complete when this
    bookmaker has an open price for every outcome any bookmaker of the feed quotes in it; the solver runs
    once per complete market (on its first row) and the others take its answer."""
    return f"""
    SELECT {SELECTION}, received_at, price, implied_prob, book_sum, outcomes,
           max(first_parameter) OVER (PARTITION BY {MARKET}) AS method_parameter
    FROM (SELECT *, CASE WHEN nth = 1 AND priced = outcomes AND {method} <> 'multiplicative'
                          AND NOT ({method} = 'shin' AND book_sum <= 1)
                         THEN margin_parameter(implied_all, {method}) END AS first_parameter
          FROM (SELECT *, 1 / price AS implied_prob,
                       sum(1 / price) OVER book AS book_sum, array_agg(1 / price) OVER book AS implied_all,
                       count(*) OVER book AS priced, row_number() OVER book AS nth
                FROM (SELECT *, max(outcome_rank) OVER (PARTITION BY source, fixture_id, market_id, side) AS outcomes
                      FROM (SELECT *, dense_rank() OVER (PARTITION BY source, fixture_id, market_id, side
                                                         ORDER BY outcome_id, player_id, line) AS outcome_rank
                            FROM {latest}) AS ranked) AS counted
                WHERE is_open
                WINDOW book AS (PARTITION BY {MARKET})) AS open_prices) AS solved
    WHERE priced = outcomes AND outcomes >= 2
    """


# The margin out of one outcome's implied probability q, in a market of book sum B solved to `parameter`.
# Shin has no root when B <= 1 (an under-round book, e.g. an exchange's backs): such a market is normalised.
_FAIR_PROB = """CASE WHEN {method} = 'shin' AND book_sum > 1
         THEN (sqrt(method_parameter * method_parameter + 4 * (1 - method_parameter) * implied_prob * implied_prob
                    / book_sum) - method_parameter) / (2 * (1 - method_parameter))
         WHEN {method} = 'power' THEN power(implied_prob, method_parameter)
         ELSE implied_prob / book_sum END"""


def _latest(duckdb: bool) -> str:
    """Each selection's last observed tick at or before `as_of`, with whether it was open (observed_quotes'
    is_open, of observed_ticks read up to `as_of`)."""
    return f"""(SELECT {SELECTION}, received_at, raw_id, price, {OPEN_PRICE} AS is_open
             FROM {_latest_observed(duckdb)} AS latest)"""


def _best(duckdb: bool) -> str:
    return f"""
    SELECT {OUTCOME},
           max(price) AS best_price,
           array_agg(book ORDER BY book) FILTER (WHERE level = 1) AS best_bookmakers,
           max(price) FILTER (WHERE level = 2) AS second_price,
           array_agg(book ORDER BY book) FILTER (WHERE level = 2) AS second_bookmakers,
           count(*) AS bookmakers,
           1 / max(price) AS best_implied_prob,
           max(received_at) AS latest_at
    FROM (SELECT *, coalesce(bookmaker, source) AS book,
                 dense_rank() OVER (PARTITION BY {OUTCOME} ORDER BY price DESC) AS level
          FROM {_latest(duckdb)} AS latest WHERE is_open) AS open_prices
    GROUP BY {OUTCOME}
    """


BEST_PRICES_AS_OF = Relation(
    "best_prices_as_of",
    _best(duckdb=False),
    duckdb_body=_best(duckdb=True),
    params=(("as_of", "timestamptz"),),
    returns="TABLE (source text, fixture_id text, market_id text, outcome_id text, player_id text, line numeric,"
    " side text, best_price double precision, best_bookmakers text[], second_price double precision,"
    " second_bookmakers text[], bookmakers bigint, best_implied_prob double precision, latest_at timestamptz)",
    doc="The screen at `as_of`: per outcome (a selection across the bookmakers of one feed), the best open price, "
    "the bookmakers offering it, the next best price below it and who offers that, and how many bookmakers have "
    "an open price. A bookmaker whose last tick was suspended or inactive is not on the screen.",
)


def _fair_as_of(duckdb: bool) -> str:
    return f"""
    SELECT received_at, {SELECTION}, price, implied_prob, {_FAIR_PROB.format(method="method")} AS fair_prob,
           1 / ({_FAIR_PROB.format(method="method")}) AS fair_price,
           book_sum - 1 AS overround, method, method_parameter, CAST(outcomes AS integer) AS outcomes
    FROM ({_fair(f"{_latest(duckdb)} AS latest WHERE {_method_checked('method', 'fair_prices_as_of')}",
                 "method")}) AS fair
    """


FAIR_PRICES_AS_OF = Relation(
    "fair_prices_as_of",
    _fair_as_of(duckdb=False),
    duckdb_body=_fair_as_of(duckdb=True),
    params=(("as_of", "timestamptz"), ("method", "text", "'multiplicative'")),
    returns="TABLE (received_at timestamptz, source text, bookmaker text, fixture_id text, market_id text,"
    " outcome_id text, player_id text, line numeric, side text, price double precision,"
    " implied_prob double precision, fair_prob double precision, fair_price double precision,"
    " overround double precision, method text, method_parameter double precision, outcomes integer)",
    doc="Per bookmaker and market at `as_of`, each outcome's probability with the margin taken out: method "
    "'multiplicative' (in proportion to 1 / price), 'power' (1 / price raised to the k that makes them sum to 1) "
    "or 'shin' (Shin 1993: z, the share of insider money, solved by bisection; method_parameter is k or z). Only "
    "markets whose every outcome (as any bookmaker of the feed quotes them) has an open price at this bookmaker: "
    "their fair_prob sums to 1. A market missing an outcome gives no row.",
)

# Furthest from the consensus first; equally far (to 1e-12: the engines' last bits differ), by name.
_FURTHEST = "floor(abs(fair_prob - consensus_prob) * 1e12) DESC, book"
CONSENSUS_AS_OF = Relation(
    "consensus_as_of",
    f"""
    SELECT {OUTCOME}, consensus_prob, 1 / consensus_prob AS consensus_price, count(*) AS bookmakers,
           array_agg(book ORDER BY book) AS by_bookmaker,
           array_agg(fair_prob ORDER BY book) AS fair_probs,
           array_agg(fair_prob - consensus_prob ORDER BY book) AS deviations,
           (array_agg(book ORDER BY {_FURTHEST}))[1] AS furthest_bookmaker,
           (array_agg(fair_prob - consensus_prob ORDER BY {_FURTHEST}))[1] AS furthest_deviation
    FROM (SELECT *, avg(CASE WHEN 2 * nth BETWEEN books AND books + 2 THEN fair_prob END)
                        OVER (PARTITION BY {OUTCOME}) AS consensus_prob
          FROM (SELECT *, coalesce(bookmaker, source) AS book,
                       row_number() OVER (PARTITION BY {OUTCOME} ORDER BY fair_prob, bookmaker) AS nth,
                       count(*) OVER (PARTITION BY {OUTCOME}) AS books
                FROM fair_prices_as_of(as_of, method)) AS ranked) AS median
    GROUP BY {OUTCOME}, consensus_prob
    """,
    params=FAIR_PRICES_AS_OF.params,
    returns="TABLE (source text, fixture_id text, market_id text, outcome_id text, player_id text, line numeric,"
    " side text, consensus_prob double precision, consensus_price double precision, bookmakers bigint,"
    " by_bookmaker text[], fair_probs double precision[], deviations double precision[],"
    " furthest_bookmaker text, furthest_deviation double precision)",
    doc="What the market thinks at `as_of`: per outcome, the median of the bookmakers' fair probabilities "
    "(fair_prices_as_of with `method`), how many bookmakers are behind it, and each one's deviation from it "
    "(by_bookmaker, fair_probs and deviations are parallel arrays); furthest_bookmaker is the one most off the "
    "market. The medians of a market's outcomes need not sum to exactly 1.",
)


def _moves(since: str, until: str, *, closures: bool = False, fixture: str = "NULL") -> str:
    """The move detection of steam_moves and lead_lag: each price of a selection within [since, until)
    that moved by at least `min_move` (relative) from the selection's previous price in that window
    (received_at, raw_id, SELECTION, prev_price, price, move_pct, direction), and `reopened`: the tick
    before it was not open (a price after a suspension). `closures` adds closed_at: the latest tick of
    the same outcome, at any bookmaker, that was not open, up to this one's frame. `fixture`: only
    that fixture's (NULL: every fixture)."""
    closed = (f", max(CASE WHEN is_open THEN NULL ELSE received_at END) OVER (PARTITION BY {ACROSS}"
              f" ORDER BY {IN_ORDER}) AS closed_at" if closures else "")
    return f"""
    SELECT * FROM (
        SELECT received_at, raw_id, {SELECTION}, prev_price, price, price / nullif(prev_price, 0) - 1 AS move_pct,
               sign(price / nullif(prev_price, 0) - 1) AS direction, reopened{", closed_at" if closures else ""}
        FROM (SELECT *, lag(price) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER}) AS prev_price
              FROM (SELECT *, coalesce(NOT lag(is_open) OVER (PARTITION BY {SELECTION} ORDER BY {IN_ORDER}), false)
                              AS reopened{closed}
                    FROM observed_quotes WHERE received_at >= {since} AND received_at < {until}
                                               AND ({fixture} IS NULL OR fixture_id = {fixture})) AS ticks
              WHERE price IS NOT NULL) AS priced
    ) AS moved WHERE abs(move_pct) >= min_move"""


WINDOW_PARAMS = (("since", "timestamptz", "TIMESTAMPTZ '-infinity'"),
                 ("until", "timestamptz", "TIMESTAMPTZ 'infinity'"))
# An episode is a move no other qualifying move of the outcome (same direction) preceded within `span`,
# and every qualifying move within `span` after it; `nth` 1 is each bookmaker's first move in it.
_STEAM_ORDER = "received_at, raw_id, bookmaker"
STEAM_MOVES = Relation(
    "steam_moves",
    f"""
    WITH goals AS (  -- each new score of a fixture (its first report, then every rise in goals)
        SELECT fixture_id, received_at FROM (
            SELECT fixture_id, received_at, home_score + away_score AS goals,
                   max(home_score + away_score) OVER (PARTITION BY fixture_id ORDER BY received_at
                                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
            FROM score_changes
            WHERE home_score IS NOT NULL AND away_score IS NOT NULL AND received_at < until) AS reports
        WHERE before IS NULL OR goals > before
    ), episodes AS (
        SELECT *, max(CASE WHEN before_at IS NULL OR before_at < received_at - span THEN received_at END)
                      OVER (PARTITION BY {ACROSS}, direction ORDER BY {_STEAM_ORDER} ROWS UNBOUNDED PRECEDING)
                      AS started_at
        FROM (SELECT *, lag(received_at) OVER (PARTITION BY {ACROSS}, direction ORDER BY {_STEAM_ORDER}) AS before_at,
                     reopened OR coalesce(closed_at >= received_at - event_window, false) AS suspended_before
              FROM ({_moves("since", "until", closures=True)}) AS moves) AS marked
    ), members AS (
        SELECT *, row_number() OVER (PARTITION BY {ACROSS}, direction, started_at, bookmaker
                                     ORDER BY received_at, raw_id) AS nth
        FROM episodes WHERE received_at <= started_at + span
    ), steam AS (
        SELECT {ACROSS}, direction, started_at,
               (array_agg(bookmaker ORDER BY {_STEAM_ORDER}))[1] AS first_bookmaker,
               (array_agg(source ORDER BY {_STEAM_ORDER}))[1] AS first_source,
               (array_agg(prev_price ORDER BY {_STEAM_ORDER}))[1] AS first_from,
               (array_agg(price ORDER BY {_STEAM_ORDER}))[1] AS first_to,
               (array_agg(suspended_before ORDER BY {_STEAM_ORDER}))[1] AS suspended_before,
               count(DISTINCT bookmaker) AS bookmakers,
               array_agg(bookmaker ORDER BY {_STEAM_ORDER}) FILTER (WHERE nth = 1) AS movers,
               max(received_at) AS ended_at,
               array_agg(received_at ORDER BY {_STEAM_ORDER}) FILTER (WHERE nth = 1) AS movers_at,
               array_agg(prev_price ORDER BY {_STEAM_ORDER}) FILTER (WHERE nth = 1) AS movers_from,
               array_agg(price ORDER BY {_STEAM_ORDER}) FILTER (WHERE nth = 1) AS movers_to
        FROM members
        GROUP BY {ACROSS}, direction, started_at
        HAVING count(DISTINCT bookmaker) >= min_books
    )
    SELECT {ACROSS}, CASE WHEN direction < 0 THEN 'shortened' ELSE 'drifted' END AS direction,
           started_at, first_bookmaker, first_source, first_from, first_to, bookmakers, movers, ended_at,
           movers_at, movers_from, movers_to,
           suspended_before OR EXISTS (SELECT 1 FROM goals AS g WHERE g.fixture_id = steam.fixture_id
                                         AND g.received_at <= steam.started_at
                                         AND g.received_at >= steam.started_at - event_window) AS after_event
    FROM steam
    """,
    params=(("min_move", "double precision"), ("min_books", "integer"), ("span", "interval"), *WINDOW_PARAMS,
            ("event_window", "interval", "INTERVAL '5 seconds'")),
    returns="TABLE (fixture_id text, market_id text, outcome_id text, player_id text, line numeric, side text,"
    " direction text, started_at timestamptz, first_bookmaker text, first_source text,"
    " first_from double precision, first_to double precision, bookmakers bigint, movers text[],"
    " ended_at timestamptz, movers_at timestamptz[], movers_from double precision[], movers_to double precision[],"
    " after_event boolean)",
    doc="Steam: the same selection moving the same way by at least `min_move` (0.05 = 5 %) at `min_books` "
    "or more bookmakers within `span` of the first mover. One row per episode, started by a move no "
    "other qualifying move preceded within the window; `movers` names each bookmaker once, in the order it "
    "first moved, and movers_at / movers_from / movers_to give the time and prices of that first move."
    " Within [since, until) (default: all history; a move needs the price before it in "
    "the window too). after_event: the first move came within `event_window` (default 5 s) after a new score of "
    "the fixture or a tick of the outcome that was not open (a suspension, at any bookmaker), or is the first price "
    "after its own suspension: repricing, not information.",
)

# Each move is paired with every bookmaker that priced its outcome; the mover's own pairing marks its
# move, so each follower's next move the same way is a window over those rows (no self-join: one
# pass however many moves an outcome has). Within a frame, the leader's pairing comes before the
# follower's own move: a move in the same frame is not a reply.
LEAD_LAG = Relation(
    "lead_lag",
    f"""
    WITH quoted AS (
        SELECT DISTINCT {ACROSS}, coalesce(bookmaker, source) AS book
        FROM observed_quotes WHERE price IS NOT NULL AND received_at >= since AND received_at < until
                               AND (fixture IS NULL OR fixture_id = fixture)
    ), replies AS (
        SELECT *, min(CASE WHEN leader = follower THEN received_at END)
                      OVER (PARTITION BY {ACROSS}, direction, follower
                            ORDER BY received_at DESC, raw_id DESC, leader = follower ROWS UNBOUNDED PRECEDING)
                      - received_at AS delay
        FROM (SELECT m.received_at, m.raw_id, {", ".join(f"m.{c}" for c in ACROSS.split(", "))}, m.direction,
                     coalesce(m.bookmaker, m.source) AS leader, q.book AS follower
              FROM ({_moves("since", "until", fixture="fixture")}) AS m JOIN quoted AS q ON {_same("q", "m")}) AS paired
    )
    SELECT leader, follower, count(*) AS moves, count(*) FILTER (WHERE delay <= span) AS follows,
           CAST(count(*) FILTER (WHERE delay <= span) AS double precision) / count(*) AS follow_rate,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CASE WHEN delay <= span THEN extract(epoch FROM delay) END)
               * INTERVAL '1 second' AS median_delay
    FROM replies WHERE leader <> follower
    GROUP BY leader, follower
    """,
    params=(("min_move", "double precision"), ("span", "interval"), *WINDOW_PARAMS, ("fixture", "text", "NULL")),
    returns="TABLE (leader text, follower text, moves bigint, follows bigint, follow_rate double precision,"
    " median_delay interval)",
    doc="Who leads, who copies: for each ordered pair of bookmakers, the leader's moves of at least `min_move` "
    "(steam_moves' move detection) on outcomes the follower priced too, how many the follower followed (a move "
    "the same way within `span` after it), the share, and the median delay. Within [since, until) (default: "
    "all history), of one `fixture` if given.",
)

# The best open price of every outcome of a market after every frame, without reading each bookmaker's
# latest state at every moment of the market: per outcome, each tick is paired with every bookmaker
# that quotes the outcome, whose standing price is carried forward (a run per own tick); then per
# market, each frame with every outcome, carrying each outcome's best forward the same way.
_MK = "source, fixture_id, market_id, side_key"
ARBITRAGE_WINDOWS = Relation(
    "arbitrage_windows",
    f"""
    WITH quotes AS NOT MATERIALIZED (
        SELECT source, fixture_id, market_id, coalesce(side, '') AS side_key, outcome_id,
               outcome_id || '|' || coalesce(player_id, '') || '|' || coalesce(CAST(line AS varchar), '')
                   AS outcome_key,
               coalesce(bookmaker, source) AS book, received_at, raw_id, CASE WHEN is_open THEN price END AS price
        FROM observed_quotes  -- the window is applied where it is read: see _CLOSING
    ), books AS NOT MATERIALIZED (
        SELECT DISTINCT {_MK}, outcome_key, outcome_id, book FROM quotes
        WHERE received_at >= since AND received_at < until
    ),
    standing AS (
        SELECT *, max(own_price) OVER (PARTITION BY {_MK}, outcome_key, book, run) AS held
        FROM (SELECT *, sum(CASE WHEN book = ticker THEN 1 ELSE 0 END)
                            OVER (PARTITION BY {_MK}, outcome_key, book ORDER BY received_at, raw_id, ticker
                                  ROWS UNBOUNDED PRECEDING) AS run
              FROM (SELECT q.source, q.fixture_id, q.market_id, q.side_key, q.outcome_key, q.outcome_id, q.received_at,
                           q.raw_id, q.book AS ticker, b.book, CASE WHEN b.book = q.book THEN q.price END AS own_price
                    FROM quotes AS q JOIN books AS b USING ({_MK}, outcome_key, outcome_id)
                    WHERE q.received_at >= since AND q.received_at < until) AS paired) AS runs
    ), outcome_best AS (  -- each outcome's best after each frame that ticked it
        SELECT * FROM (
            SELECT *, {_last(f"{_MK}, outcome_key, received_at, raw_id", "ticker DESC")}
            FROM (SELECT {_MK}, outcome_key, outcome_id, received_at, raw_id, ticker, max(held) AS best_price,
                         (array_agg(book ORDER BY held DESC, book) FILTER (WHERE held IS NOT NULL))[1] AS best_book
                  FROM standing GROUP BY {_MK}, outcome_key, outcome_id, received_at, raw_id, ticker) AS ticks
        ) AS ranked WHERE nth = 1
    ), market AS (
        SELECT *, max(own_best) OVER (PARTITION BY {_MK}, outcome_key, run) AS best,
               max(own_book) OVER (PARTITION BY {_MK}, outcome_key, run) AS best_by
        FROM (SELECT *, sum(CASE WHEN outcome_key = ticker THEN 1 ELSE 0 END)
                            OVER (PARTITION BY {_MK}, outcome_key ORDER BY received_at, raw_id, ticker
                                  ROWS UNBOUNDED PRECEDING) AS run
              FROM (SELECT o.source, o.fixture_id, o.market_id, o.side_key, o.received_at, o.raw_id,
                           o.outcome_key AS ticker, a.outcome_key, a.outcome_id,
                           CASE WHEN a.outcome_key = o.outcome_key THEN o.best_price END AS own_best,
                           CASE WHEN a.outcome_key = o.outcome_key THEN o.best_book END AS own_book
                    FROM outcome_best AS o
                    JOIN (SELECT DISTINCT {_MK}, outcome_key, outcome_id FROM books) AS a USING ({_MK})) AS paired
             ) AS runs
    ), frames AS (  -- the market after each frame: its outcomes' best prices and their sum
        SELECT * FROM (
            SELECT *, {_last(f"{_MK}, received_at, raw_id", "ticker DESC")}
            FROM (SELECT {_MK}, received_at, raw_id, ticker, count(*) AS outcomes, count(best) AS priced,
                         sum(1 / best) AS implied_sum,
                         array_agg(outcome_id ORDER BY outcome_key) AS outcome_ids,
                         array_agg(best ORDER BY outcome_key) AS prices,
                         array_agg(best_by ORDER BY outcome_key) AS bookmakers
                  FROM market GROUP BY {_MK}, received_at, raw_id, ticker) AS after_ticks
        ) AS ranked WHERE nth = 1
    ), flagged AS (
        SELECT *, lag(arb) OVER w AS was, lead(received_at) OVER w AS next_at
        FROM (SELECT *, outcomes >= 2 AND priced = outcomes AND implied_sum < 1 - min_edge AS arb FROM frames) AS f
        WINDOW w AS (PARTITION BY {_MK} ORDER BY received_at, raw_id)
    ), islands AS (
        SELECT *, sum(CASE WHEN arb AND NOT coalesce(was, false) THEN 1 ELSE 0 END)
                      OVER (PARTITION BY {_MK} ORDER BY received_at, raw_id ROWS UNBOUNDED PRECEDING) AS island
        FROM flagged
    ), windows AS (
        SELECT *, max(1 - implied_sum) OVER island_rows AS max_edge,
               last_value(next_at) OVER (island_rows ORDER BY received_at, raw_id
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS ended_at
        FROM islands WHERE arb
        WINDOW island_rows AS (PARTITION BY {_MK}, island)
    )
    SELECT source, fixture_id, market_id, nullif(side_key, '') AS side, received_at AS started_at, ended_at,
           ended_at - received_at AS duration, 1 - implied_sum AS edge, max_edge, implied_sum,
           outcome_ids, prices, bookmakers
    FROM windows WHERE NOT coalesce(was, false)
    """,
    params=(("min_edge", "double precision"), *WINDOW_PARAMS),
    returns="TABLE (source text, fixture_id text, market_id text, side text, started_at timestamptz,"
    " ended_at timestamptz, duration interval, edge double precision, max_edge double precision,"
    " implied_sum double precision, outcome_ids text[], prices double precision[], bookmakers text[])",
    doc="Free money: intervals during which the best open prices of a market's outcomes, from any bookmakers of "
    "the feed, sum to an implied probability below 1 - `min_edge`. started_at is the frame that opened it, ended_at "
    "the frame that closed it (null: still open at the end of the data or of the window); edge = 1 - implied_sum "
    "at the start, max_edge the best during it; outcome_ids, prices and bookmakers (parallel arrays) are the prices "
    "that made it at the start. Within [since, until) (default: all history).",
)

# Closing line value of the desk's own MM bets and filled orders (shared/protocols/mm-ws.md): a bet
# takes its fixture and outcome from its order; an order's price is orderCents, a probability.
_LATEST_OF = "(array_agg({column} ORDER BY received_at DESC, raw_id DESC) FILTER (WHERE {column} IS NOT NULL))[1]"
_FIRST_OF = "(array_agg({column} ORDER BY received_at, raw_id) FILTER (WHERE {column} IS NOT NULL))[1]"
_CLOSE_SELECTION = "q.source, q.bookmaker, q.fixture_id, q.market_id, q.outcome_id, q.player_id, q.line, q.side"
# Each selection's last open price before its fixture's start, once the start has passed, for the
# fixtures the desk traded. Written out where it is read (twice), not as a CTE: DuckDB materialises a
# CTE read twice, and a fixture filter then stops above it.
_CLOSING = f"""(
        SELECT {SELECTION}, received_at, price, is_open
        FROM (SELECT q.*, {_last(_CLOSE_SELECTION, "q.received_at DESC, q.raw_id DESC")}
              FROM observed_quotes AS q JOIN starts AS s ON s.fixture_id = q.fixture_id
              WHERE q.is_open AND q.received_at < s.start_time AND s.start_time <= now()
                AND q.fixture_id IN (SELECT fixture_id FROM taken)) AS ranked
        WHERE nth = 1)"""
CLOSING_LINE_VALUE = Relation(
    "closing_line_value",
    f"""
    WITH orders AS (
        SELECT source, order_id, {_LATEST_OF.format(column="fixture_id")} AS fixture_id,
               {_LATEST_OF.format(column="outcome_id")} AS outcome_id,
               {_LATEST_OF.format(column="exchange")} AS exchange, {_LATEST_OF.format(column="price")} AS cents,
               {_LATEST_OF.format(column="matched_stake")} AS matched_stake,
               min(received_at) FILTER (WHERE order_status = 'FILLED') AS filled_at
        FROM order_changes WHERE order_id IS NOT NULL GROUP BY source, order_id
    ), taken AS (
        SELECT 'bet' AS kind, b.bet_id, b.order_id, b.source, b.bookmaker, o.fixture_id, o.outcome_id, b.taken_at,
               CAST(b.price AS double precision) AS taken_price, b.stake
        FROM (SELECT source, bet_id, {_FIRST_OF.format(column="order_id")} AS order_id,
                     {_FIRST_OF.format(column="bookmaker")} AS bookmaker, {_FIRST_OF.format(column="price")} AS price,
                     {_FIRST_OF.format(column="stake")} AS stake, min(received_at) AS taken_at
              FROM bet_changes WHERE bet_id IS NOT NULL GROUP BY source, bet_id) AS b
        LEFT JOIN orders AS o ON o.source = b.source AND o.order_id = b.order_id
        UNION ALL
        SELECT 'order', NULL, order_id, source, exchange, fixture_id, outcome_id, filled_at,
               CASE WHEN cents > 0 AND cents < 1 THEN 1 / CAST(cents AS double precision) END, matched_stake
        FROM orders WHERE filled_at IS NOT NULL
    ), starts AS (
        SELECT fixture_id, (array_agg(start_time ORDER BY received_at DESC))[1] AS start_time
        FROM fixture_changes WHERE start_time IS NOT NULL GROUP BY fixture_id
    ), same_book AS (
        SELECT fixture_id, outcome_id, book, price, received_at
        FROM (SELECT *, coalesce(bookmaker, source) AS book,
                     {_last("fixture_id, outcome_id, coalesce(bookmaker, source)", "received_at DESC")}
              FROM {_CLOSING} AS closing WHERE coalesce(player_id, '0') = '0') AS ranked
        WHERE nth = 1
    ), consensus AS (
        SELECT fixture_id, outcome_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY fair_prob) AS fair_prob,
               count(*) AS bookmakers
        FROM (SELECT *, {_FAIR_PROB.format(method="'multiplicative'")} AS fair_prob
              FROM ({_fair(f"{_CLOSING} AS closing", "'multiplicative'")}) AS fair) AS fair
        WHERE coalesce(player_id, '0') = '0'
        GROUP BY fixture_id, outcome_id
    )
    SELECT kind, bet_id, order_id, source, bookmaker, fixture_id, outcome_id, taken_at, taken_price, stake,
           in_play, closing_at, closing_price, taken_price / closing_price - 1 AS clv_pct,
           1 / closing_price - 1 / taken_price AS clv_prob,
           fair_closing_prob, 1 / fair_closing_prob AS fair_closing_price,
           taken_price * fair_closing_prob - 1 AS fair_clv_pct, fair_closing_prob - 1 / taken_price AS fair_clv_prob,
           consensus_bookmakers
    FROM (SELECT t.*, CASE WHEN t.closing_at IS NOT NULL THEN b.price END AS closing_price,
                 CASE WHEN t.closing_at IS NOT NULL THEN n.fair_prob END AS fair_closing_prob,
                 CASE WHEN t.closing_at IS NOT NULL THEN n.bookmakers END AS consensus_bookmakers
          FROM (SELECT k.*, k.taken_at >= s.start_time AS in_play,
                       CASE WHEN k.taken_at < s.start_time AND s.start_time <= now() THEN s.start_time END AS closing_at
                FROM taken AS k LEFT JOIN starts AS s ON s.fixture_id = k.fixture_id) AS t
          -- (only equalities in ON: anything else there stops DuckDB passing a fixture filter to the right side)
          LEFT JOIN same_book AS b ON b.fixture_id = t.fixture_id AND b.outcome_id = t.outcome_id
                                  AND b.book = t.bookmaker
          LEFT JOIN consensus AS n ON n.fixture_id = t.fixture_id AND n.outcome_id = t.outcome_id) AS valued
    """,
    doc="Did the desk beat the close? Every MM hedge bet and every filled MM order (an order's price is orderCents, "
    "a probability: taken_price is its inverse), against the closing line of its fixture and outcome: the last open "
    "price before the fixture's start time (the latest any feed gave) at the same bookmaker (for an order: its "
    "exchange, where a feed prices it), and the consensus fair probability then (median over bookmakers, margin "
    "taken out in proportion). clv_pct = taken / closing - 1; clv_prob and fair_clv_prob in implied probability "
    "points (positive: beat the close). Null while the fixture has no start time or has not started, and for bets "
    "taken in play (in_play). Time basis: received_at (taken_at is the first row of the bet, or the order's FILLED "
    "row).",
)


# The relations of today, in the order they are created: observed_ticks first, the others are built on it;
# observed_quotes and margin_parameter before the relations that read them.
CURRENT: tuple[Relation, ...] = (
    OBSERVED_TICKS, PRICE_HISTORY, PRICES_AS_OF, OPENING_CLOSING_LINES, PRICE_CANDLES, MARKET_OVERROUND,
    OBSERVED_QUOTES, MARGIN_PARAMETER, STEAM_MOVES, BEST_PRICES_AS_OF, FAIR_PRICES_AS_OF, CONSENSUS_AS_OF, LEAD_LAG,
    ARBITRAGE_WINDOWS, CLOSING_LINE_VALUE,
)


def _typed(param: tuple[str, ...]) -> str:
    return f"{param[0]} {param[1]}" + (f" DEFAULT {param[2]}" if len(param) > 2 else "")


def _kinds(relation: Relation) -> str:
    return ", ".join(param[1] for param in relation.params)


def postgres_ddl(relation: Relation) -> str:
    if not relation.params:
        return f"CREATE VIEW {relation.name} AS {relation.body}"
    params = ", ".join(map(_typed, relation.params))
    volatility = "IMMUTABLE" if relation.scalar else "STABLE"
    return (f"CREATE FUNCTION {relation.name}({params}) RETURNS {relation.returns} LANGUAGE sql {volatility}"
            f" AS $body$ {relation.body} $body$")


def postgres_drop(relation: Relation) -> str:
    if not relation.params:
        return f"DROP VIEW IF EXISTS {relation.name}"
    return f"DROP FUNCTION IF EXISTS {relation.name}({_kinds(relation)})"


def postgres_comment(relation: Relation) -> str | None:
    if not relation.doc:
        return None
    kind = "FUNCTION" if relation.params else "VIEW"
    target = relation.name + (f"({_kinds(relation)})" if relation.params else "")
    return f"COMMENT ON {kind} {target} IS '{relation.doc.replace(chr(39), chr(39) * 2)}'"


def duckdb_ddl(relation: Relation) -> str:
    body = relation.duckdb_body or relation.body
    if not relation.params:
        return f"CREATE OR REPLACE VIEW {relation.name} AS {body}"
    params = ", ".join(param[0] + (f" := {param[2]}" if len(param) > 2 else "") for param in relation.params)
    if relation.scalar:
        return f"CREATE OR REPLACE MACRO {relation.name}({params}) AS ({body})"
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
# …and, asked for: the consensus fair probability of each outcome at sample times (a list of
# timestamps: as of each, consensus_as_of with a method), and the market's arbitrage windows.
CONSENSUS_LINE = (
    "SELECT g.at, c.outcome_id, c.player_id, CAST(c.line AS double precision) AS line, c.side, c.consensus_prob"
    " FROM (SELECT unnest(CAST(%s AS timestamptz[])) AS at) AS g, consensus_as_of(g.at, %s) AS c"
    " WHERE c.fixture_id = %s AND c.market_id = %s ORDER BY g.at, c.outcome_id"
)
ARBITRAGE = (
    "SELECT started_at, ended_at, edge FROM arbitrage_windows(%s)"
    " WHERE fixture_id = %s AND market_id = %s ORDER BY started_at"
)
# Busiest by pushed ticks (a resync's snapshot rows say nothing about how busy a market is).
BUSIEST_MARKETS = (
    "SELECT fixture_id, market_id, count(DISTINCT coalesce(bookmaker, source)) AS bookmakers, count(*) AS ticks"
    " FROM price_ticks WHERE price IS NOT NULL AND origin IS NULL GROUP BY fixture_id, market_id"
    " ORDER BY bookmakers DESC, ticks DESC, fixture_id, market_id LIMIT %s"
)
