"""Availability, fast again (issue 23 §1 follow-up; docs/availability.md, docs/performance.md).

Migration 0016 made observed_ticks' `active` whether a bet could be placed, and made one fixture's
as-of relations 1.5–5× slower. The rows are the same; this revision reads and sorts fewer of them:

- prices_as_of, best_prices_as_of and fair_prices_as_of (and consensus_as_of through it) read
  history up to `as_of` only: observed_ticks' windows only look back, so every read inside them —
  the ticks, the selections a flag covers, the flags — is bounded at `as_of` (before, the bound was
  applied above the windows and the fixture's whole day was read). Each selection's last row is
  found in the timeline's own order, not by a second sort (DISTINCT ON, a row number from the latest).
- observed_ticks carries the flags in force over the flag rows alone (a few per selection), and
  orders its last windows by tick_no first (the same order as received_at, raw_id): one sort of the
  fixture's rows and one small one per selection, where 0016 had three.
- market_overround keeps each frame's last row in its window's order instead of a DISTINCT (a
  sort of every row again).

The others are unchanged. Every relation is replaced in place (CREATE OR REPLACE, the same columns):
the views, functions and grants built on them stay.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import re
from types import ModuleType

from alembic import context, op
from sqlalchemy import text

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None
# The migration whose relations this one replaces, and restores on downgrade.
PREVIOUS = "0016"

# The relations as this revision creates them (warehouse.analysis.relations.CURRENT on the day it was
# written). Frozen: never edit; a change to a relation is a new migration.
CREATE: tuple[str, ...] = (  # each relation, then its comment
    """CREATE VIEW observed_ticks AS
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, last_price AS price, open AS active, last_status AS status, last_stake AS max_stake, attrs, origin
    FROM (SELECT *, lag(open) OVER w AS was, lead(received_at) OVER w AS next_at, lead(raw_id) OVER w AS next_raw_id
          FROM (
        SELECT *, CASE WHEN closed_now THEN false ELSE bool_or(active) OVER last END AS open,
               max(price) OVER last AS last_price, max(status) OVER last AS last_status,
               max(max_stake) OVER last AS last_stake
        FROM (
        SELECT *, sum(kind) OVER w AS tick_no,
               coalesce(max(2 * flag_no + CASE WHEN closed THEN 1 ELSE 0 END) OVER w % 2 = 1, false) AS closed_now
        FROM (SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side, price, active, status, max_stake, attrs, origin, 1 AS kind, CAST(NULL AS bigint)
            AS flag_no,
                     CAST(NULL AS boolean) AS closed
              FROM (
        SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id,
            line, side, price, active, status, max_stake, attrs, origin FROM price_ticks WHERE origin IS NULL
        UNION ALL
        SELECT s.received_at, s.source, s.raw_id, s.source_ts, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id,
            s.player_id, s.line, s.side, s.price, s.active, s.status, s.max_stake, s.attrs, s.origin FROM
            price_ticks AS s
        WHERE s.origin = 'snapshot' AND NOT EXISTS (
            SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                           WHERE e.fixture_id = s.fixture_id AND e.market_id = s.market_id AND e.outcome_id =
                               s.outcome_id AND e.source = s.source AND e.bookmaker IS NOT DISTINCT FROM s.bookmaker
                               AND e.player_id IS NOT DISTINCT FROM s.player_id AND e.line IS NOT DISTINCT FROM
                               s.line AND e.side IS NOT DISTINCT FROM s.side AND (e.origin IS NULL OR e.origin =
                               'snapshot')
                             AND e.received_at <= s.received_at
                             AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                           ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
            WHERE before.source_ts >= s.source_ts)) AS seen
              UNION ALL
              SELECT received_at, source, raw_id, NULL, bookmaker, fixture_id, market_id, outcome_id, player_id,
                  line,
                     side, NULL, NULL, NULL, NULL, NULL, origin, 0, flag_no, closed
              FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            origin, flag_no, coalesce(max(CASE WHEN book_suspended IS NOT NULL THEN 2 * flag_no + CASE WHEN
            book_suspended THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR coalesce(max(CASE WHEN book_inactive IS
            NOT NULL THEN 2 * flag_no + CASE WHEN book_inactive THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR
            coalesce(max(CASE WHEN market_inactive IS NOT NULL THEN 2 * flag_no + CASE WHEN market_inactive THEN 1
            ELSE 0 END END) OVER w % 2 = 1, false) AS closed
        FROM (SELECT *, row_number() OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS flag_no
              FROM (  -- one row per covered selection and frame
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            max(origin) AS origin, bool_or(book_suspended) AS book_suspended,
               bool_or(book_inactive) AS book_inactive, bool_or(market_inactive) AS market_inactive
        FROM (SELECT s.source, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id, s.player_id, s.line, s.side,
            f.received_at, f.raw_id, f.origin, f.book_suspended, f.book_inactive, f.market_inactive
              FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, CAST(NULL AS text) AS market_id,
               book_suspended, book_inactive, CAST(NULL AS boolean) AS market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker,
               CASE (changes->>'suspended') WHEN 'true' THEN true WHEN 'false' THEN NOT true END AS book_suspended,
               CASE (changes->>'bookmakerIsActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   book_inactive
        FROM fixture_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND ((changes->>'suspended') IS NOT NULL OR (changes->>'bookmakerIsActive') IS NOT NULL)) AS book
        UNION ALL
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id, NULL, NULL, market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id,
               CASE (attrs->>'marketActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   market_inactive
        FROM market_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND (attrs->>'marketActive') IS NOT NULL) AS market) AS f
              JOIN (SELECT DISTINCT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side FROM
                  price_ticks WHERE bookmaker IS NOT NULL) AS s
                ON s.source = f.source AND s.fixture_id = f.fixture_id AND s.bookmaker = f.bookmaker
              WHERE f.market_id IS NULL OR f.market_id = s.market_id) AS covered
        GROUP BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id)
            AS flagged) AS numbered
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id ROWS UNBOUNDED PRECEDING)) AS flag_states) AS timeline
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id, kind ROWS UNBOUNDED PRECEDING)) AS numbered
        WINDOW last AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            tick_no ORDER BY received_at, raw_id, kind
                        ROWS UNBOUNDED PRECEDING)) AS carried
          WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
              ORDER BY tick_no, received_at, raw_id, kind)) AS changed
    WHERE kind = 1 OR (tick_no > 0 AND open IS DISTINCT FROM was AND NOT coalesce(next_at = received_at AND
        next_raw_id = raw_id, false))
""",
    "COMMENT ON VIEW observed_ticks IS 'price_ticks as the collector observed them, the base of every "
    'other relation: pushed ticks, and snapshot ticks (fetched over REST after a gap, dated when the '
    'request was sent) unless the tick of the selection just before already carried a vendor time '
    "(source_ts) at least as new. Backfill ticks (the vendor''s history of a gap) are left out. "
    'active: a bet could be placed at the price — false while the vendor marks the price, its market '
    '(marketActive) or its bookmaker (suspended, bookmakerIsActive) closed; when such a flag changes, '
    'each selection it covers gets a row at that frame with its last price (raw_id: the frame of the '
    "flag).'",
    """CREATE VIEW price_history AS
    SELECT received_at, source_ts, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
        price, prev_price,
           price - prev_price AS move,
           price / nullif(prev_price, 0) - 1 AS move_pct,
           1 / nullif(price, 0) AS implied_prob,
           active, status, max_stake, raw_id, origin
    FROM (SELECT *, lag(price) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id,
        line, side ORDER BY received_at, raw_id) AS prev_price
          FROM observed_ticks WHERE price IS NOT NULL) AS priced
""",
    "COMMENT ON VIEW price_history IS 'Every price of a selection with the price before it, the move "
    '(absolute and relative) and the implied probability 1/price. Ticks without a price (suspensions, '
    "locked odds) are left out. Built on observed_ticks; origin is ''snapshot'' for a price fetched "
    "after a gap.'",
    """CREATE FUNCTION prices_as_of(as_of timestamptz) RETURNS TABLE (received_at timestamptz, source_ts
           timestamptz, source text, bookmaker text, fixture_id text, market_id text, outcome_id text, player_id
           text, line numeric, side text, price double precision, active boolean, status text, max_stake numeric,
           raw_id bigint, origin text) LANGUAGE sql STABLE AS $body$
    SELECT received_at, source_ts, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
        price, active, status, max_stake, raw_id, origin
    FROM (
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, price, active, status, max_stake, attrs, origin
    FROM (SELECT *, lead(received_at) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
        player_id, line, side ORDER BY tick_no, received_at, raw_id, kind) AS later FROM (
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, last_price AS price, open AS active, last_status AS status, last_stake AS max_stake, attrs, origin,
        tick_no, kind
    FROM (SELECT *, lag(open) OVER w AS was, lead(received_at) OVER w AS next_at, lead(raw_id) OVER w AS next_raw_id
          FROM (
        SELECT *, CASE WHEN closed_now THEN false ELSE bool_or(active) OVER last END AS open,
               max(price) OVER last AS last_price, max(status) OVER last AS last_status,
               max(max_stake) OVER last AS last_stake
        FROM (
        SELECT *, sum(kind) OVER w AS tick_no,
               coalesce(max(2 * flag_no + CASE WHEN closed THEN 1 ELSE 0 END) OVER w % 2 = 1, false) AS closed_now
        FROM (SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side, price, active, status, max_stake, attrs, origin, 1 AS kind, CAST(NULL AS bigint)
            AS flag_no,
                     CAST(NULL AS boolean) AS closed
              FROM (
        SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id,
            line, side, price, active, status, max_stake, attrs, origin FROM price_ticks WHERE origin IS NULL AND
            received_at <= as_of
        UNION ALL
        SELECT s.received_at, s.source, s.raw_id, s.source_ts, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id,
            s.player_id, s.line, s.side, s.price, s.active, s.status, s.max_stake, s.attrs, s.origin FROM
            price_ticks AS s
        WHERE s.origin = 'snapshot' AND received_at <= as_of AND NOT EXISTS (
            SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                           WHERE e.fixture_id = s.fixture_id AND e.market_id = s.market_id AND e.outcome_id =
                               s.outcome_id AND e.source = s.source AND e.bookmaker IS NOT DISTINCT FROM s.bookmaker
                               AND e.player_id IS NOT DISTINCT FROM s.player_id AND e.line IS NOT DISTINCT FROM
                               s.line AND e.side IS NOT DISTINCT FROM s.side AND (e.origin IS NULL OR e.origin =
                               'snapshot')
                             AND e.received_at <= s.received_at
                             AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                           ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
            WHERE before.source_ts >= s.source_ts)) AS seen
              UNION ALL
              SELECT received_at, source, raw_id, NULL, bookmaker, fixture_id, market_id, outcome_id, player_id,
                  line,
                     side, NULL, NULL, NULL, NULL, NULL, origin, 0, flag_no, closed
              FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            origin, flag_no, coalesce(max(CASE WHEN book_suspended IS NOT NULL THEN 2 * flag_no + CASE WHEN
            book_suspended THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR coalesce(max(CASE WHEN book_inactive IS
            NOT NULL THEN 2 * flag_no + CASE WHEN book_inactive THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR
            coalesce(max(CASE WHEN market_inactive IS NOT NULL THEN 2 * flag_no + CASE WHEN market_inactive THEN 1
            ELSE 0 END END) OVER w % 2 = 1, false) AS closed
        FROM (SELECT *, row_number() OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS flag_no
              FROM (  -- one row per covered selection and frame
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            max(origin) AS origin, bool_or(book_suspended) AS book_suspended,
               bool_or(book_inactive) AS book_inactive, bool_or(market_inactive) AS market_inactive
        FROM (SELECT s.source, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id, s.player_id, s.line, s.side,
            f.received_at, f.raw_id, f.origin, f.book_suspended, f.book_inactive, f.market_inactive
              FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, CAST(NULL AS text) AS market_id,
               book_suspended, book_inactive, CAST(NULL AS boolean) AS market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker,
               CASE (changes->>'suspended') WHEN 'true' THEN true WHEN 'false' THEN NOT true END AS book_suspended,
               CASE (changes->>'bookmakerIsActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   book_inactive
        FROM fixture_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND ((changes->>'suspended') IS NOT NULL OR (changes->>'bookmakerIsActive') IS NOT NULL) AND received_at
              <= as_of) AS book
        UNION ALL
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id, NULL, NULL, market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id,
               CASE (attrs->>'marketActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   market_inactive
        FROM market_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND (attrs->>'marketActive') IS NOT NULL AND received_at <= as_of) AS market) AS f
              JOIN (SELECT DISTINCT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side FROM
                  price_ticks WHERE bookmaker IS NOT NULL AND received_at <= as_of) AS s
                ON s.source = f.source AND s.fixture_id = f.fixture_id AND s.bookmaker = f.bookmaker
              WHERE f.market_id IS NULL OR f.market_id = s.market_id) AS covered
        GROUP BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id)
            AS flagged) AS numbered
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id ROWS UNBOUNDED PRECEDING)) AS flag_states) AS timeline
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id, kind ROWS UNBOUNDED PRECEDING)) AS numbered
        WINDOW last AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            tick_no ORDER BY received_at, raw_id, kind
                        ROWS UNBOUNDED PRECEDING)) AS carried
          WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
              ORDER BY tick_no, received_at, raw_id, kind)) AS changed
    WHERE kind = 1 OR (tick_no > 0 AND open IS DISTINCT FROM was AND NOT coalesce(next_at = received_at AND
        next_raw_id = raw_id, false))
    ) AS kept) AS ordered
    WHERE later IS NULL
    ) AS latest
     $body$""",
    "COMMENT ON FUNCTION prices_as_of(timestamptz) IS 'The last tick of every selection at or before "
    '`as_of` (price null: suspended at that time). Built on observed_ticks: a snapshot never rolls '
    "back a newer pushed price.'",
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
             s.start_time
""",
    "COMMENT ON VIEW opening_closing_lines IS 'First price of each selection and the last price "
    "before the fixture''s start time (the latest start_time any feed gave for that fixture id); "
    'closing is null while the start time is unknown or no price came before it. Built on '
    "observed_ticks.'",
    """CREATE FUNCTION price_candles(width interval) RETURNS TABLE (bucket timestamptz, source text, bookmaker text,
           fixture_id text, market_id text, outcome_id text, player_id text, line numeric, side text, open double
           precision, high double precision, low double precision, close double precision, ticks bigint) LANGUAGE
           sql STABLE AS $body$
    SELECT to_timestamp(floor(extract(epoch FROM received_at) / extract(epoch FROM width))
                        * extract(epoch FROM width)) AS bucket,
           source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
           (array_agg(price ORDER BY received_at, raw_id))[1] AS open, max(price) AS high, min(price) AS low,
           (array_agg(price ORDER BY received_at DESC, raw_id DESC))[1] AS close, count(*) AS ticks
    FROM observed_ticks WHERE price IS NOT NULL
    GROUP BY 1, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
     $body$""",
    "COMMENT ON FUNCTION price_candles(interval) IS 'Open/high/low/close per selection in buckets of "
    "any width, aligned on the Unix epoch. Built on observed_ticks.'",
    """CREATE VIEW market_overround AS
    SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, side, CAST(outcomes AS integer) AS
        outcomes_priced,
           book AS book_sum, book - 1 AS overround
    FROM (SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, side,
                 sum(d_prob) OVER frames AS book, sum(d_priced) OVER frames AS outcomes,
                 lead(received_at) OVER frames AS next_at, lead(raw_id) OVER frames AS next_raw_id
          FROM (
    SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, side, prob - coalesce(prev_prob, 0) AS
        d_prob,
           sign(prob) - coalesce(sign(prev_prob), 0) AS d_priced
    FROM (SELECT *, CASE WHEN coalesce(prev_kind = 0 AND prev_at = received_at AND prev_raw_id = raw_id, false)
                         THEN prob_2 ELSE prob_1 END AS prev_prob
          FROM (SELECT *, CASE WHEN last_price > 0 AND open IS NOT FALSE THEN 1 / last_price ELSE 0 END AS prob,
              lag(CASE WHEN last_price > 0 AND open IS NOT FALSE THEN 1 / last_price ELSE 0 END) OVER w AS prob_1,
              lag(CASE WHEN last_price > 0 AND open IS NOT FALSE THEN 1 / last_price ELSE 0 END, 2) OVER w AS
              prob_2, lag(open) OVER w AS was, lead(received_at) OVER w AS next_at, lead(raw_id) OVER w AS
              next_raw_id,
                       lag(kind) OVER w AS prev_kind, lag(received_at) OVER w AS prev_at,
                       lag(raw_id) OVER w AS prev_raw_id
                FROM (
        SELECT *, CASE WHEN closed_now THEN false ELSE bool_or(active) OVER last END AS open,
               max(price) OVER last AS last_price, max(status) OVER last AS last_status,
               max(max_stake) OVER last AS last_stake
        FROM (
        SELECT *, sum(kind) OVER w AS tick_no,
               coalesce(max(2 * flag_no + CASE WHEN closed THEN 1 ELSE 0 END) OVER w % 2 = 1, false) AS closed_now
        FROM (SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side, price, active, status, max_stake, attrs, origin, 1 AS kind, CAST(NULL AS bigint)
            AS flag_no,
                     CAST(NULL AS boolean) AS closed
              FROM (
        SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id,
            line, side, price, active, status, max_stake, attrs, origin FROM price_ticks WHERE origin IS NULL
        UNION ALL
        SELECT s.received_at, s.source, s.raw_id, s.source_ts, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id,
            s.player_id, s.line, s.side, s.price, s.active, s.status, s.max_stake, s.attrs, s.origin FROM
            price_ticks AS s
        WHERE s.origin = 'snapshot' AND NOT EXISTS (
            SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                           WHERE e.fixture_id = s.fixture_id AND e.market_id = s.market_id AND e.outcome_id =
                               s.outcome_id AND e.source = s.source AND e.bookmaker IS NOT DISTINCT FROM s.bookmaker
                               AND e.player_id IS NOT DISTINCT FROM s.player_id AND e.line IS NOT DISTINCT FROM
                               s.line AND e.side IS NOT DISTINCT FROM s.side AND (e.origin IS NULL OR e.origin =
                               'snapshot')
                             AND e.received_at <= s.received_at
                             AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                           ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
            WHERE before.source_ts >= s.source_ts)) AS seen
              UNION ALL
              SELECT received_at, source, raw_id, NULL, bookmaker, fixture_id, market_id, outcome_id, player_id,
                  line,
                     side, NULL, NULL, NULL, NULL, NULL, origin, 0, flag_no, closed
              FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            origin, flag_no, coalesce(max(CASE WHEN book_suspended IS NOT NULL THEN 2 * flag_no + CASE WHEN
            book_suspended THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR coalesce(max(CASE WHEN book_inactive IS
            NOT NULL THEN 2 * flag_no + CASE WHEN book_inactive THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR
            coalesce(max(CASE WHEN market_inactive IS NOT NULL THEN 2 * flag_no + CASE WHEN market_inactive THEN 1
            ELSE 0 END END) OVER w % 2 = 1, false) AS closed
        FROM (SELECT *, row_number() OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS flag_no
              FROM (  -- one row per covered selection and frame
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            max(origin) AS origin, bool_or(book_suspended) AS book_suspended,
               bool_or(book_inactive) AS book_inactive, bool_or(market_inactive) AS market_inactive
        FROM (SELECT s.source, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id, s.player_id, s.line, s.side,
            f.received_at, f.raw_id, f.origin, f.book_suspended, f.book_inactive, f.market_inactive
              FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, CAST(NULL AS text) AS market_id,
               book_suspended, book_inactive, CAST(NULL AS boolean) AS market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker,
               CASE (changes->>'suspended') WHEN 'true' THEN true WHEN 'false' THEN NOT true END AS book_suspended,
               CASE (changes->>'bookmakerIsActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   book_inactive
        FROM fixture_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND ((changes->>'suspended') IS NOT NULL OR (changes->>'bookmakerIsActive') IS NOT NULL)) AS book
        UNION ALL
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id, NULL, NULL, market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id,
               CASE (attrs->>'marketActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   market_inactive
        FROM market_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND (attrs->>'marketActive') IS NOT NULL) AS market) AS f
              JOIN (SELECT DISTINCT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side FROM
                  price_ticks WHERE bookmaker IS NOT NULL) AS s
                ON s.source = f.source AND s.fixture_id = f.fixture_id AND s.bookmaker = f.bookmaker
              WHERE f.market_id IS NULL OR f.market_id = s.market_id) AS covered
        GROUP BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id)
            AS flagged) AS numbered
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id ROWS UNBOUNDED PRECEDING)) AS flag_states) AS timeline
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id, kind ROWS UNBOUNDED PRECEDING)) AS numbered
        WINDOW last AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            tick_no ORDER BY received_at, raw_id, kind
                        ROWS UNBOUNDED PRECEDING)) AS carried
                WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
                    side ORDER BY tick_no, received_at, raw_id, kind)) AS changed
          WHERE kind = 1 OR (tick_no > 0 AND open IS DISTINCT FROM was AND NOT coalesce(next_at = received_at AND
              next_raw_id = raw_id, false))) AS moved
    ) AS deltas
          WINDOW frames AS (PARTITION BY source, bookmaker, fixture_id, market_id, side ORDER BY received_at,
              raw_id)) AS running
    WHERE next_at IS NULL OR next_at <> received_at OR next_raw_id IS DISTINCT FROM raw_id
""",
    "COMMENT ON VIEW market_overround IS 'After every frame that changed a market: how many of its "
    'outcomes are priced, the sum of their implied probabilities, and the overround (sum - 1: the '
    "bookmaker''s margin). Compare only rows where outcomes_priced is the market''s full outcome "
    "count (in player markets every player is an outcome). Built on observed_ticks.'",
    """CREATE VIEW observed_quotes AS SELECT *, active IS NOT FALSE AND price IS NOT NULL AND price > 1 AS is_open
           FROM observed_ticks""",
    "COMMENT ON VIEW observed_quotes IS 'observed_ticks with is_open: whether a bet could be placed "
    'at that price when it was observed (not marked inactive, and a price above 1). Every relation of '
    "migration 0010 reads open prices from here.'",
    """CREATE FUNCTION margin_parameter(implied double precision[], method text) RETURNS double precision LANGUAGE
           sql IMMUTABLE AS $body$
    WITH RECURSIVE bisect(lo, width, step) AS (
        SELECT CAST(0 AS double precision),
               CASE WHEN method = 'shin' THEN CAST(1 AS double precision) ELSE greatest(CAST(1 AS double precision),
                   ln(cardinality(implied)) / -ln((SELECT max(q) FROM unnest(implied) AS u(q)))) END, 0
        UNION ALL
        SELECT CASE WHEN (SELECT CASE WHEN method = 'shin'
                                      THEN sum((sqrt((lo + width / 2) * (lo + width / 2) + 4 * (1 - (lo + width /
                                          2)) * q * q / b.book) - (lo + width / 2))
                                               / (2 * (1 - (lo + width / 2))))
                                      ELSE sum(power(q, (lo + width / 2))) END
                          FROM unnest(implied) AS u(q), (SELECT sum(v) AS book FROM unnest(implied) AS t(v)) AS b) >
                              1
                    THEN (lo + width / 2) ELSE lo END,
               width / 2, step + 1
        FROM bisect WHERE step < 60
    )
    SELECT lo + width / 2 FROM bisect WHERE step = 60
     $body$""",
    "COMMENT ON FUNCTION margin_parameter(double precision[], text) IS 'Shin''s z (method ''shin'') "
    "or the power method''s k (''power'') of one market whose outcomes'' implied probabilities (1 / "
    'price) are `implied`: the root of sum(fair) = 1, by 60 steps of bisection (to the last bit of a '
    "double). fair_prices_as_of uses it.'",
    """CREATE FUNCTION steam_moves(min_move double precision, min_books integer, span interval, since timestamptz
           DEFAULT TIMESTAMPTZ '-infinity', until timestamptz DEFAULT TIMESTAMPTZ 'infinity', event_window interval
           DEFAULT INTERVAL '5 seconds') RETURNS TABLE (fixture_id text, market_id text, outcome_id text, player_id
           text, line numeric, side text, direction text, started_at timestamptz, first_bookmaker text, first_source
           text, first_from double precision, first_to double precision, bookmakers bigint, movers text[], ended_at
           timestamptz, movers_at timestamptz[], movers_from double precision[], movers_to double precision[],
           after_event boolean) LANGUAGE sql STABLE AS $body$
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
                      OVER (PARTITION BY fixture_id, market_id, outcome_id, player_id, line, side, direction ORDER
                          BY received_at, raw_id, bookmaker ROWS UNBOUNDED PRECEDING)
                      AS started_at
        FROM (SELECT *, lag(received_at) OVER (PARTITION BY fixture_id, market_id, outcome_id, player_id, line,
            side, direction ORDER BY received_at, raw_id, bookmaker) AS before_at,
                     reopened OR coalesce(closed_at >= received_at - event_window, false) AS suspended_before
              FROM (
    SELECT * FROM (
        SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            prev_price, price, price / nullif(prev_price, 0) - 1 AS move_pct,
               sign(price / nullif(prev_price, 0) - 1) AS direction, reopened, closed_at
        FROM (SELECT *, lag(price) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS prev_price
              FROM (SELECT *, coalesce(NOT lag(is_open) OVER (PARTITION BY source, bookmaker, fixture_id, market_id,
                  outcome_id, player_id, line, side ORDER BY received_at, raw_id), false)
                              AS reopened, max(CASE WHEN is_open THEN NULL ELSE received_at END) OVER (PARTITION BY
                                  fixture_id, market_id, outcome_id, player_id, line, side ORDER BY received_at,
                                  raw_id) AS closed_at
                    FROM observed_quotes WHERE received_at >= since AND received_at < until
                                               AND (NULL IS NULL OR fixture_id = NULL)) AS ticks
              WHERE price IS NOT NULL) AS priced
    ) AS moved WHERE abs(move_pct) >= min_move) AS moves) AS marked
    ), members AS (
        SELECT *, row_number() OVER (PARTITION BY fixture_id, market_id, outcome_id, player_id, line, side,
            direction, started_at, bookmaker
                                     ORDER BY received_at, raw_id) AS nth
        FROM episodes WHERE received_at <= started_at + span
    ), steam AS (
        SELECT fixture_id, market_id, outcome_id, player_id, line, side, direction, started_at,
               (array_agg(bookmaker ORDER BY received_at, raw_id, bookmaker))[1] AS first_bookmaker,
               (array_agg(source ORDER BY received_at, raw_id, bookmaker))[1] AS first_source,
               (array_agg(prev_price ORDER BY received_at, raw_id, bookmaker))[1] AS first_from,
               (array_agg(price ORDER BY received_at, raw_id, bookmaker))[1] AS first_to,
               (array_agg(suspended_before ORDER BY received_at, raw_id, bookmaker))[1] AS suspended_before,
               count(DISTINCT bookmaker) AS bookmakers,
               array_agg(bookmaker ORDER BY received_at, raw_id, bookmaker) FILTER (WHERE nth = 1) AS movers,
               max(received_at) AS ended_at,
               array_agg(received_at ORDER BY received_at, raw_id, bookmaker) FILTER (WHERE nth = 1) AS movers_at,
               array_agg(prev_price ORDER BY received_at, raw_id, bookmaker) FILTER (WHERE nth = 1) AS movers_from,
               array_agg(price ORDER BY received_at, raw_id, bookmaker) FILTER (WHERE nth = 1) AS movers_to
        FROM members
        GROUP BY fixture_id, market_id, outcome_id, player_id, line, side, direction, started_at
        HAVING count(DISTINCT bookmaker) >= min_books
    )
    SELECT fixture_id, market_id, outcome_id, player_id, line, side, CASE WHEN direction < 0 THEN 'shortened' ELSE
        'drifted' END AS direction,
           started_at, first_bookmaker, first_source, first_from, first_to, bookmakers, movers, ended_at,
           movers_at, movers_from, movers_to,
           suspended_before OR EXISTS (SELECT 1 FROM goals AS g WHERE g.fixture_id = steam.fixture_id
                                         AND g.received_at <= steam.started_at
                                         AND g.received_at >= steam.started_at - event_window) AS after_event
    FROM steam
     $body$""",
    'COMMENT ON FUNCTION steam_moves(double precision, integer, interval, timestamptz, timestamptz, '
    "interval) IS 'Steam: the same selection moving the same way by at least `min_move` (0.05 = 5 %) "
    'at `min_books` or more bookmakers within `span` of the first mover. One row per episode, started '
    'by a move no other qualifying move preceded within the window; `movers` names each bookmaker '
    'once, in the order it first moved, and movers_at / movers_from / movers_to give the time and '
    'prices of that first move. Within [since, until) (default: all history; a move needs the price '
    'before it in the window too). after_event: the first move came within `event_window` (default 5 '
    's) after a new score of the fixture or a tick of the outcome that was not open (a suspension, at '
    "any bookmaker), or is the first price after its own suspension: repricing, not information.'",
    """CREATE FUNCTION best_prices_as_of(as_of timestamptz) RETURNS TABLE (source text, fixture_id text, market_id
           text, outcome_id text, player_id text, line numeric, side text, best_price double precision,
           best_bookmakers text[], second_price double precision, second_bookmakers text[], bookmakers bigint,
           best_implied_prob double precision, latest_at timestamptz) LANGUAGE sql STABLE AS $body$
    SELECT source, fixture_id, market_id, outcome_id, player_id, line, side,
           max(price) AS best_price,
           array_agg(book ORDER BY book) FILTER (WHERE level = 1) AS best_bookmakers,
           max(price) FILTER (WHERE level = 2) AS second_price,
           array_agg(book ORDER BY book) FILTER (WHERE level = 2) AS second_bookmakers,
           count(*) AS bookmakers,
           1 / max(price) AS best_implied_prob,
           max(received_at) AS latest_at
    FROM (SELECT *, coalesce(bookmaker, source) AS book,
                 dense_rank() OVER (PARTITION BY source, fixture_id, market_id, outcome_id, player_id, line, side
                     ORDER BY price DESC) AS level
          FROM (SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at,
              raw_id, price, active IS NOT FALSE AND price IS NOT NULL AND price > 1 AS is_open
             FROM (
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, price, active, status, max_stake, attrs, origin
    FROM (SELECT *, lead(received_at) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
        player_id, line, side ORDER BY tick_no, received_at, raw_id, kind) AS later FROM (
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, last_price AS price, open AS active, last_status AS status, last_stake AS max_stake, attrs, origin,
        tick_no, kind
    FROM (SELECT *, lag(open) OVER w AS was, lead(received_at) OVER w AS next_at, lead(raw_id) OVER w AS next_raw_id
          FROM (
        SELECT *, CASE WHEN closed_now THEN false ELSE bool_or(active) OVER last END AS open,
               max(price) OVER last AS last_price, max(status) OVER last AS last_status,
               max(max_stake) OVER last AS last_stake
        FROM (
        SELECT *, sum(kind) OVER w AS tick_no,
               coalesce(max(2 * flag_no + CASE WHEN closed THEN 1 ELSE 0 END) OVER w % 2 = 1, false) AS closed_now
        FROM (SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side, price, active, status, max_stake, attrs, origin, 1 AS kind, CAST(NULL AS bigint)
            AS flag_no,
                     CAST(NULL AS boolean) AS closed
              FROM (
        SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id,
            line, side, price, active, status, max_stake, attrs, origin FROM price_ticks WHERE origin IS NULL AND
            received_at <= as_of
        UNION ALL
        SELECT s.received_at, s.source, s.raw_id, s.source_ts, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id,
            s.player_id, s.line, s.side, s.price, s.active, s.status, s.max_stake, s.attrs, s.origin FROM
            price_ticks AS s
        WHERE s.origin = 'snapshot' AND received_at <= as_of AND NOT EXISTS (
            SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                           WHERE e.fixture_id = s.fixture_id AND e.market_id = s.market_id AND e.outcome_id =
                               s.outcome_id AND e.source = s.source AND e.bookmaker IS NOT DISTINCT FROM s.bookmaker
                               AND e.player_id IS NOT DISTINCT FROM s.player_id AND e.line IS NOT DISTINCT FROM
                               s.line AND e.side IS NOT DISTINCT FROM s.side AND (e.origin IS NULL OR e.origin =
                               'snapshot')
                             AND e.received_at <= s.received_at
                             AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                           ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
            WHERE before.source_ts >= s.source_ts)) AS seen
              UNION ALL
              SELECT received_at, source, raw_id, NULL, bookmaker, fixture_id, market_id, outcome_id, player_id,
                  line,
                     side, NULL, NULL, NULL, NULL, NULL, origin, 0, flag_no, closed
              FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            origin, flag_no, coalesce(max(CASE WHEN book_suspended IS NOT NULL THEN 2 * flag_no + CASE WHEN
            book_suspended THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR coalesce(max(CASE WHEN book_inactive IS
            NOT NULL THEN 2 * flag_no + CASE WHEN book_inactive THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR
            coalesce(max(CASE WHEN market_inactive IS NOT NULL THEN 2 * flag_no + CASE WHEN market_inactive THEN 1
            ELSE 0 END END) OVER w % 2 = 1, false) AS closed
        FROM (SELECT *, row_number() OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS flag_no
              FROM (  -- one row per covered selection and frame
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            max(origin) AS origin, bool_or(book_suspended) AS book_suspended,
               bool_or(book_inactive) AS book_inactive, bool_or(market_inactive) AS market_inactive
        FROM (SELECT s.source, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id, s.player_id, s.line, s.side,
            f.received_at, f.raw_id, f.origin, f.book_suspended, f.book_inactive, f.market_inactive
              FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, CAST(NULL AS text) AS market_id,
               book_suspended, book_inactive, CAST(NULL AS boolean) AS market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker,
               CASE (changes->>'suspended') WHEN 'true' THEN true WHEN 'false' THEN NOT true END AS book_suspended,
               CASE (changes->>'bookmakerIsActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   book_inactive
        FROM fixture_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND ((changes->>'suspended') IS NOT NULL OR (changes->>'bookmakerIsActive') IS NOT NULL) AND received_at
              <= as_of) AS book
        UNION ALL
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id, NULL, NULL, market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id,
               CASE (attrs->>'marketActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   market_inactive
        FROM market_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND (attrs->>'marketActive') IS NOT NULL AND received_at <= as_of) AS market) AS f
              JOIN (SELECT DISTINCT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side FROM
                  price_ticks WHERE bookmaker IS NOT NULL AND received_at <= as_of) AS s
                ON s.source = f.source AND s.fixture_id = f.fixture_id AND s.bookmaker = f.bookmaker
              WHERE f.market_id IS NULL OR f.market_id = s.market_id) AS covered
        GROUP BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id)
            AS flagged) AS numbered
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id ROWS UNBOUNDED PRECEDING)) AS flag_states) AS timeline
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id, kind ROWS UNBOUNDED PRECEDING)) AS numbered
        WINDOW last AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            tick_no ORDER BY received_at, raw_id, kind
                        ROWS UNBOUNDED PRECEDING)) AS carried
          WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
              ORDER BY tick_no, received_at, raw_id, kind)) AS changed
    WHERE kind = 1 OR (tick_no > 0 AND open IS DISTINCT FROM was AND NOT coalesce(next_at = received_at AND
        next_raw_id = raw_id, false))
    ) AS kept) AS ordered
    WHERE later IS NULL
    ) AS latest) AS latest WHERE is_open) AS open_prices
    GROUP BY source, fixture_id, market_id, outcome_id, player_id, line, side
     $body$""",
    "COMMENT ON FUNCTION best_prices_as_of(timestamptz) IS 'The screen at `as_of`: per outcome (a "
    'selection across the bookmakers of one feed), the best open price, the bookmakers offering it, '
    'the next best price below it and who offers that, and how many bookmakers have an open price. A '
    "bookmaker whose last tick was suspended or inactive is not on the screen.'",
    """CREATE FUNCTION fair_prices_as_of(as_of timestamptz, method text DEFAULT 'multiplicative') RETURNS TABLE
           (received_at timestamptz, source text, bookmaker text, fixture_id text, market_id text, outcome_id text,
           player_id text, line numeric, side text, price double precision, implied_prob double precision, fair_prob
           double precision, fair_price double precision, overround double precision, method text, method_parameter
           double precision, outcomes integer) LANGUAGE sql STABLE AS $body$
    SELECT received_at, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, price,
        implied_prob, CASE WHEN method = 'shin' AND book_sum > 1
         THEN (sqrt(method_parameter * method_parameter + 4 * (1 - method_parameter) * implied_prob * implied_prob
                    / book_sum) - method_parameter) / (2 * (1 - method_parameter))
         WHEN method = 'power' THEN power(implied_prob, method_parameter)
         ELSE implied_prob / book_sum END AS fair_prob,
           1 / (CASE WHEN method = 'shin' AND book_sum > 1
         THEN (sqrt(method_parameter * method_parameter + 4 * (1 - method_parameter) * implied_prob * implied_prob
                    / book_sum) - method_parameter) / (2 * (1 - method_parameter))
         WHEN method = 'power' THEN power(implied_prob, method_parameter)
         ELSE implied_prob / book_sum END) AS fair_price,
           book_sum - 1 AS overround, method, method_parameter, CAST(outcomes AS integer) AS outcomes
    FROM (
    SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, price,
        implied_prob, book_sum, outcomes,
           max(first_parameter) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, side) AS
               method_parameter
    FROM (SELECT *, CASE WHEN nth = 1 AND priced = outcomes AND method <> 'multiplicative'
                          AND NOT (method = 'shin' AND book_sum <= 1)
                         THEN margin_parameter(implied_all, method) END AS first_parameter
          FROM (SELECT *, 1 / price AS implied_prob,
                       sum(1 / price) OVER book AS book_sum, array_agg(1 / price) OVER book AS implied_all,
                       count(*) OVER book AS priced, row_number() OVER book AS nth
                FROM (SELECT *, max(outcome_rank) OVER (PARTITION BY source, fixture_id, market_id, side) AS
                    outcomes
                      FROM (SELECT *, dense_rank() OVER (PARTITION BY source, fixture_id, market_id, side
                                                         ORDER BY outcome_id, player_id, line) AS outcome_rank
                            FROM (SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
                                side, received_at, raw_id, price, active IS NOT FALSE AND price IS NOT NULL AND
                                price > 1 AS is_open
             FROM (
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, price, active, status, max_stake, attrs, origin
    FROM (SELECT *, lead(received_at) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
        player_id, line, side ORDER BY tick_no, received_at, raw_id, kind) AS later FROM (
    SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id, line,
        side, last_price AS price, open AS active, last_status AS status, last_stake AS max_stake, attrs, origin,
        tick_no, kind
    FROM (SELECT *, lag(open) OVER w AS was, lead(received_at) OVER w AS next_at, lead(raw_id) OVER w AS next_raw_id
          FROM (
        SELECT *, CASE WHEN closed_now THEN false ELSE bool_or(active) OVER last END AS open,
               max(price) OVER last AS last_price, max(status) OVER last AS last_status,
               max(max_stake) OVER last AS last_stake
        FROM (
        SELECT *, sum(kind) OVER w AS tick_no,
               coalesce(max(2 * flag_no + CASE WHEN closed THEN 1 ELSE 0 END) OVER w % 2 = 1, false) AS closed_now
        FROM (SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side, price, active, status, max_stake, attrs, origin, 1 AS kind, CAST(NULL AS bigint)
            AS flag_no,
                     CAST(NULL AS boolean) AS closed
              FROM (
        SELECT received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id, player_id,
            line, side, price, active, status, max_stake, attrs, origin FROM price_ticks WHERE origin IS NULL AND
            received_at <= as_of
        UNION ALL
        SELECT s.received_at, s.source, s.raw_id, s.source_ts, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id,
            s.player_id, s.line, s.side, s.price, s.active, s.status, s.max_stake, s.attrs, s.origin FROM
            price_ticks AS s
        WHERE s.origin = 'snapshot' AND received_at <= as_of AND NOT EXISTS (
            SELECT 1 FROM (SELECT e.source_ts FROM price_ticks AS e
                           WHERE e.fixture_id = s.fixture_id AND e.market_id = s.market_id AND e.outcome_id =
                               s.outcome_id AND e.source = s.source AND e.bookmaker IS NOT DISTINCT FROM s.bookmaker
                               AND e.player_id IS NOT DISTINCT FROM s.player_id AND e.line IS NOT DISTINCT FROM
                               s.line AND e.side IS NOT DISTINCT FROM s.side AND (e.origin IS NULL OR e.origin =
                               'snapshot')
                             AND e.received_at <= s.received_at
                             AND (e.received_at < s.received_at OR e.raw_id < s.raw_id)
                           ORDER BY e.received_at DESC, e.raw_id DESC LIMIT 1) AS before
            WHERE before.source_ts >= s.source_ts)) AS seen
              UNION ALL
              SELECT received_at, source, raw_id, NULL, bookmaker, fixture_id, market_id, outcome_id, player_id,
                  line,
                     side, NULL, NULL, NULL, NULL, NULL, origin, 0, flag_no, closed
              FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            origin, flag_no, coalesce(max(CASE WHEN book_suspended IS NOT NULL THEN 2 * flag_no + CASE WHEN
            book_suspended THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR coalesce(max(CASE WHEN book_inactive IS
            NOT NULL THEN 2 * flag_no + CASE WHEN book_inactive THEN 1 ELSE 0 END END) OVER w % 2 = 1, false) OR
            coalesce(max(CASE WHEN market_inactive IS NOT NULL THEN 2 * flag_no + CASE WHEN market_inactive THEN 1
            ELSE 0 END END) OVER w % 2 = 1, false) AS closed
        FROM (SELECT *, row_number() OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS flag_no
              FROM (  -- one row per covered selection and frame
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id,
            max(origin) AS origin, bool_or(book_suspended) AS book_suspended,
               bool_or(book_inactive) AS book_inactive, bool_or(market_inactive) AS market_inactive
        FROM (SELECT s.source, s.bookmaker, s.fixture_id, s.market_id, s.outcome_id, s.player_id, s.line, s.side,
            f.received_at, f.raw_id, f.origin, f.book_suspended, f.book_inactive, f.market_inactive
              FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, CAST(NULL AS text) AS market_id,
               book_suspended, book_inactive, CAST(NULL AS boolean) AS market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker,
               CASE (changes->>'suspended') WHEN 'true' THEN true WHEN 'false' THEN NOT true END AS book_suspended,
               CASE (changes->>'bookmakerIsActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   book_inactive
        FROM fixture_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND ((changes->>'suspended') IS NOT NULL OR (changes->>'bookmakerIsActive') IS NOT NULL) AND received_at
              <= as_of) AS book
        UNION ALL
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id, NULL, NULL, market_inactive
        FROM (
        SELECT received_at, raw_id, origin, source, fixture_id, bookmaker, market_id,
               CASE (attrs->>'marketActive') WHEN 'true' THEN false WHEN 'false' THEN NOT false END AS
                   market_inactive
        FROM market_changes
        WHERE bookmaker IS NOT NULL AND (origin IS NULL OR origin = 'snapshot')
          AND (attrs->>'marketActive') IS NOT NULL AND received_at <= as_of) AS market) AS f
              JOIN (SELECT DISTINCT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side FROM
                  price_ticks WHERE bookmaker IS NOT NULL AND received_at <= as_of) AS s
                ON s.source = f.source AND s.fixture_id = f.fixture_id AND s.bookmaker = f.bookmaker
              WHERE f.market_id IS NULL OR f.market_id = s.market_id) AS covered
        GROUP BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, raw_id)
            AS flagged) AS numbered
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id ROWS UNBOUNDED PRECEDING)) AS flag_states) AS timeline
        WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side ORDER
            BY received_at, raw_id, kind ROWS UNBOUNDED PRECEDING)) AS numbered
        WINDOW last AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            tick_no ORDER BY received_at, raw_id, kind
                        ROWS UNBOUNDED PRECEDING)) AS carried
          WINDOW w AS (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side
              ORDER BY tick_no, received_at, raw_id, kind)) AS changed
    WHERE kind = 1 OR (tick_no > 0 AND open IS DISTINCT FROM was AND NOT coalesce(next_at = received_at AND
        next_raw_id = raw_id, false))
    ) AS kept) AS ordered
    WHERE later IS NULL
    ) AS latest) AS latest WHERE CASE WHEN method IN ('multiplicative', 'power', 'shin') THEN true ELSE
        CAST('fair_prices_as_of: method ' || method || ' is not one of multiplicative, power, shin' AS integer) = 0
        END) AS ranked) AS counted
                WHERE is_open
                WINDOW book AS (PARTITION BY source, bookmaker, fixture_id, market_id, side)) AS open_prices) AS
                    solved
    WHERE priced = outcomes AND outcomes >= 2
    ) AS fair
     $body$""",
    "COMMENT ON FUNCTION fair_prices_as_of(timestamptz, text) IS 'Per bookmaker and market at "
    "`as_of`, each outcome''s probability with the margin taken out: method ''multiplicative'' (in "
    "proportion to 1 / price), ''power'' (1 / price raised to the k that makes them sum to 1) or "
    "''shin'' (Shin 1993: z, the share of insider money, solved by bisection; method_parameter is k "
    'or z). Only markets whose every outcome (as any bookmaker of the feed quotes them) has an open '
    "price at this bookmaker: their fair_prob sums to 1. A market missing an outcome gives no row.'",
    """CREATE FUNCTION consensus_as_of(as_of timestamptz, method text DEFAULT 'multiplicative') RETURNS TABLE
           (source text, fixture_id text, market_id text, outcome_id text, player_id text, line numeric, side text,
           consensus_prob double precision, consensus_price double precision, bookmakers bigint, by_bookmaker
           text[], fair_probs double precision[], deviations double precision[], furthest_bookmaker text,
           furthest_deviation double precision) LANGUAGE sql STABLE AS $body$
    SELECT source, fixture_id, market_id, outcome_id, player_id, line, side, consensus_prob, 1 / consensus_prob AS
        consensus_price, count(*) AS bookmakers,
           array_agg(book ORDER BY book) AS by_bookmaker,
           array_agg(fair_prob ORDER BY book) AS fair_probs,
           array_agg(fair_prob - consensus_prob ORDER BY book) AS deviations,
           (array_agg(book ORDER BY floor(abs(fair_prob - consensus_prob) * 1e12) DESC, book))[1] AS
               furthest_bookmaker,
           (array_agg(fair_prob - consensus_prob ORDER BY floor(abs(fair_prob - consensus_prob) * 1e12) DESC,
               book))[1] AS furthest_deviation
    FROM (SELECT *, avg(CASE WHEN 2 * nth BETWEEN books AND books + 2 THEN fair_prob END)
                        OVER (PARTITION BY source, fixture_id, market_id, outcome_id, player_id, line, side) AS
                            consensus_prob
          FROM (SELECT *, coalesce(bookmaker, source) AS book,
                       row_number() OVER (PARTITION BY source, fixture_id, market_id, outcome_id, player_id, line,
                           side ORDER BY fair_prob, bookmaker) AS nth,
                       count(*) OVER (PARTITION BY source, fixture_id, market_id, outcome_id, player_id, line, side)
                           AS books
                FROM fair_prices_as_of(as_of, method)) AS ranked) AS median
    GROUP BY source, fixture_id, market_id, outcome_id, player_id, line, side, consensus_prob
     $body$""",
    "COMMENT ON FUNCTION consensus_as_of(timestamptz, text) IS 'What the market thinks at `as_of`: "
    "per outcome, the median of the bookmakers'' fair probabilities (fair_prices_as_of with "
    "`method`), how many bookmakers are behind it, and each one''s deviation from it (by_bookmaker, "
    'fair_probs and deviations are parallel arrays); furthest_bookmaker is the one most off the '
    "market. The medians of a market''s outcomes need not sum to exactly 1.'",
    """CREATE FUNCTION lead_lag(min_move double precision, span interval, since timestamptz DEFAULT TIMESTAMPTZ
           '-infinity', until timestamptz DEFAULT TIMESTAMPTZ 'infinity', fixture text DEFAULT NULL) RETURNS TABLE
           (leader text, follower text, moves bigint, follows bigint, follow_rate double precision, median_delay
           interval) LANGUAGE sql STABLE AS $body$
    WITH quoted AS (
        SELECT DISTINCT fixture_id, market_id, outcome_id, player_id, line, side, coalesce(bookmaker, source) AS
            book
        FROM observed_quotes WHERE price IS NOT NULL AND received_at >= since AND received_at < until
                               AND (fixture IS NULL OR fixture_id = fixture)
    ), replies AS (
        SELECT *, min(CASE WHEN leader = follower THEN received_at END)
                      OVER (PARTITION BY fixture_id, market_id, outcome_id, player_id, line, side, direction,
                          follower
                            ORDER BY received_at DESC, raw_id DESC, leader = follower ROWS UNBOUNDED PRECEDING)
                      - received_at AS delay
        FROM (SELECT m.received_at, m.raw_id, m.fixture_id, m.market_id, m.outcome_id, m.player_id, m.line, m.side,
            m.direction,
                     coalesce(m.bookmaker, m.source) AS leader, q.book AS follower
              FROM (
    SELECT * FROM (
        SELECT received_at, raw_id, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side,
            prev_price, price, price / nullif(prev_price, 0) - 1 AS move_pct,
               sign(price / nullif(prev_price, 0) - 1) AS direction, reopened
        FROM (SELECT *, lag(price) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, outcome_id,
            player_id, line, side ORDER BY received_at, raw_id) AS prev_price
              FROM (SELECT *, coalesce(NOT lag(is_open) OVER (PARTITION BY source, bookmaker, fixture_id, market_id,
                  outcome_id, player_id, line, side ORDER BY received_at, raw_id), false)
                              AS reopened
                    FROM observed_quotes WHERE received_at >= since AND received_at < until
                                               AND (fixture IS NULL OR fixture_id = fixture)) AS ticks
              WHERE price IS NOT NULL) AS priced
    ) AS moved WHERE abs(move_pct) >= min_move) AS m JOIN quoted AS q ON q.fixture_id = m.fixture_id AND q.market_id
        = m.market_id AND q.outcome_id = m.outcome_id AND q.player_id IS NOT DISTINCT FROM m.player_id AND q.line IS
        NOT DISTINCT FROM m.line AND q.side IS NOT DISTINCT FROM m.side) AS paired
    )
    SELECT leader, follower, count(*) AS moves, count(*) FILTER (WHERE delay <= span) AS follows,
           CAST(count(*) FILTER (WHERE delay <= span) AS double precision) / count(*) AS follow_rate,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CASE WHEN delay <= span THEN extract(epoch FROM delay) END)
               * INTERVAL '1 second' AS median_delay
    FROM replies WHERE leader <> follower
    GROUP BY leader, follower
     $body$""",
    "COMMENT ON FUNCTION lead_lag(double precision, interval, timestamptz, timestamptz, text) IS 'Who "
    "leads, who copies: for each ordered pair of bookmakers, the leader''s moves of at least "
    "`min_move` (steam_moves'' move detection) on outcomes the follower priced too, how many the "
    'follower followed (a move the same way within `span` after it), the share, and the median delay. '
    "Within [since, until) (default: all history), of one `fixture` if given.'",
    """CREATE FUNCTION arbitrage_windows(min_edge double precision, since timestamptz DEFAULT TIMESTAMPTZ
           '-infinity', until timestamptz DEFAULT TIMESTAMPTZ 'infinity') RETURNS TABLE (source text, fixture_id
           text, market_id text, side text, started_at timestamptz, ended_at timestamptz, duration interval, edge
           double precision, max_edge double precision, implied_sum double precision, outcome_ids text[], prices
           double precision[], bookmakers text[]) LANGUAGE sql STABLE AS $body$
    WITH quotes AS NOT MATERIALIZED (
        SELECT source, fixture_id, market_id, coalesce(side, '') AS side_key, outcome_id,
               outcome_id || '|' || coalesce(player_id, '') || '|' || coalesce(CAST(line AS varchar), '')
                   AS outcome_key,
               coalesce(bookmaker, source) AS book, received_at, raw_id, CASE WHEN is_open THEN price END AS price
        FROM observed_quotes  -- the window is applied where it is read: see _CLOSING
    ), books AS NOT MATERIALIZED (
        SELECT DISTINCT source, fixture_id, market_id, side_key, outcome_key, outcome_id, book FROM quotes
        WHERE received_at >= since AND received_at < until
    ),
    standing AS (
        SELECT *, max(own_price) OVER (PARTITION BY source, fixture_id, market_id, side_key, outcome_key, book, run)
            AS held
        FROM (SELECT *, sum(CASE WHEN book = ticker THEN 1 ELSE 0 END)
                            OVER (PARTITION BY source, fixture_id, market_id, side_key, outcome_key, book ORDER BY
                                received_at, raw_id, ticker
                                  ROWS UNBOUNDED PRECEDING) AS run
              FROM (SELECT q.source, q.fixture_id, q.market_id, q.side_key, q.outcome_key, q.outcome_id,
                  q.received_at,
                           q.raw_id, q.book AS ticker, b.book, CASE WHEN b.book = q.book THEN q.price END AS
                               own_price
                    FROM quotes AS q JOIN books AS b USING (source, fixture_id, market_id, side_key, outcome_key,
                        outcome_id)
                    WHERE q.received_at >= since AND q.received_at < until) AS paired) AS runs
    ), outcome_best AS (  -- each outcome's best after each frame that ticked it
        SELECT * FROM (
            SELECT *, row_number() OVER (PARTITION BY source, fixture_id, market_id, side_key, outcome_key,
                received_at, raw_id ORDER BY ticker DESC) AS nth
            FROM (SELECT source, fixture_id, market_id, side_key, outcome_key, outcome_id, received_at, raw_id,
                ticker, max(held) AS best_price,
                         (array_agg(book ORDER BY held DESC, book) FILTER (WHERE held IS NOT NULL))[1] AS best_book
                  FROM standing GROUP BY source, fixture_id, market_id, side_key, outcome_key, outcome_id,
                      received_at, raw_id, ticker) AS ticks
        ) AS ranked WHERE nth = 1
    ), market AS (
        SELECT *, max(own_best) OVER (PARTITION BY source, fixture_id, market_id, side_key, outcome_key, run) AS
            best,
               max(own_book) OVER (PARTITION BY source, fixture_id, market_id, side_key, outcome_key, run) AS
                   best_by
        FROM (SELECT *, sum(CASE WHEN outcome_key = ticker THEN 1 ELSE 0 END)
                            OVER (PARTITION BY source, fixture_id, market_id, side_key, outcome_key ORDER BY
                                received_at, raw_id, ticker
                                  ROWS UNBOUNDED PRECEDING) AS run
              FROM (SELECT o.source, o.fixture_id, o.market_id, o.side_key, o.received_at, o.raw_id,
                           o.outcome_key AS ticker, a.outcome_key, a.outcome_id,
                           CASE WHEN a.outcome_key = o.outcome_key THEN o.best_price END AS own_best,
                           CASE WHEN a.outcome_key = o.outcome_key THEN o.best_book END AS own_book
                    FROM outcome_best AS o
                    JOIN (SELECT DISTINCT source, fixture_id, market_id, side_key, outcome_key, outcome_id FROM
                        books) AS a USING (source, fixture_id, market_id, side_key)) AS paired
             ) AS runs
    ), frames AS (  -- the market after each frame: its outcomes' best prices and their sum
        SELECT * FROM (
            SELECT *, row_number() OVER (PARTITION BY source, fixture_id, market_id, side_key, received_at, raw_id
                ORDER BY ticker DESC) AS nth
            FROM (SELECT source, fixture_id, market_id, side_key, received_at, raw_id, ticker, count(*) AS outcomes,
                count(best) AS priced,
                         sum(1 / best) AS implied_sum,
                         array_agg(outcome_id ORDER BY outcome_key) AS outcome_ids,
                         array_agg(best ORDER BY outcome_key) AS prices,
                         array_agg(best_by ORDER BY outcome_key) AS bookmakers
                  FROM market GROUP BY source, fixture_id, market_id, side_key, received_at, raw_id, ticker) AS
                      after_ticks
        ) AS ranked WHERE nth = 1
    ), flagged AS (
        SELECT *, lag(arb) OVER w AS was, lead(received_at) OVER w AS next_at
        FROM (SELECT *, outcomes >= 2 AND priced = outcomes AND implied_sum < 1 - min_edge AS arb FROM frames) AS f
        WINDOW w AS (PARTITION BY source, fixture_id, market_id, side_key ORDER BY received_at, raw_id)
    ), islands AS (
        SELECT *, sum(CASE WHEN arb AND NOT coalesce(was, false) THEN 1 ELSE 0 END)
                      OVER (PARTITION BY source, fixture_id, market_id, side_key ORDER BY received_at, raw_id ROWS
                          UNBOUNDED PRECEDING) AS island
        FROM flagged
    ), windows AS (
        SELECT *, max(1 - implied_sum) OVER island_rows AS max_edge,
               last_value(next_at) OVER (island_rows ORDER BY received_at, raw_id
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS ended_at
        FROM islands WHERE arb
        WINDOW island_rows AS (PARTITION BY source, fixture_id, market_id, side_key, island)
    )
    SELECT source, fixture_id, market_id, nullif(side_key, '') AS side, received_at AS started_at, ended_at,
           ended_at - received_at AS duration, 1 - implied_sum AS edge, max_edge, implied_sum,
           outcome_ids, prices, bookmakers
    FROM windows WHERE NOT coalesce(was, false)
     $body$""",
    "COMMENT ON FUNCTION arbitrage_windows(double precision, timestamptz, timestamptz) IS 'Free "
    "money: intervals during which the best open prices of a market''s outcomes, from any bookmakers "
    'of the feed, sum to an implied probability below 1 - `min_edge`. started_at is the frame that '
    'opened it, ended_at the frame that closed it (null: still open at the end of the data or of the '
    'window); edge = 1 - implied_sum at the start, max_edge the best during it; outcome_ids, prices '
    'and bookmakers (parallel arrays) are the prices that made it at the start. Within [since, until) '
    "(default: all history).'",
    """CREATE VIEW closing_line_value AS
    WITH orders AS (
        SELECT source, order_id, (array_agg(fixture_id ORDER BY received_at DESC, raw_id DESC) FILTER (WHERE
            fixture_id IS NOT NULL))[1] AS fixture_id,
               (array_agg(outcome_id ORDER BY received_at DESC, raw_id DESC) FILTER (WHERE outcome_id IS NOT
                   NULL))[1] AS outcome_id,
               (array_agg(exchange ORDER BY received_at DESC, raw_id DESC) FILTER (WHERE exchange IS NOT NULL))[1]
                   AS exchange, (array_agg(price ORDER BY received_at DESC, raw_id DESC) FILTER (WHERE price IS NOT
                   NULL))[1] AS cents,
               (array_agg(matched_stake ORDER BY received_at DESC, raw_id DESC) FILTER (WHERE matched_stake IS NOT
                   NULL))[1] AS matched_stake,
               min(received_at) FILTER (WHERE order_status = 'FILLED') AS filled_at
        FROM order_changes WHERE order_id IS NOT NULL GROUP BY source, order_id
    ), taken AS (
        SELECT 'bet' AS kind, b.bet_id, b.order_id, b.source, b.bookmaker, o.fixture_id, o.outcome_id, b.taken_at,
               CAST(b.price AS double precision) AS taken_price, b.stake
        FROM (SELECT source, bet_id, (array_agg(order_id ORDER BY received_at, raw_id) FILTER (WHERE order_id IS NOT
            NULL))[1] AS order_id,
                     (array_agg(bookmaker ORDER BY received_at, raw_id) FILTER (WHERE bookmaker IS NOT NULL))[1] AS
                         bookmaker, (array_agg(price ORDER BY received_at, raw_id) FILTER (WHERE price IS NOT
                         NULL))[1] AS price,
                     (array_agg(stake ORDER BY received_at, raw_id) FILTER (WHERE stake IS NOT NULL))[1] AS stake,
                         min(received_at) AS taken_at
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
                     row_number() OVER (PARTITION BY fixture_id, outcome_id, coalesce(bookmaker, source) ORDER BY
                         received_at DESC) AS nth
              FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, price,
            is_open
        FROM (SELECT q.*, row_number() OVER (PARTITION BY q.source, q.bookmaker, q.fixture_id, q.market_id,
            q.outcome_id, q.player_id, q.line, q.side ORDER BY q.received_at DESC, q.raw_id DESC) AS nth
              FROM observed_quotes AS q JOIN starts AS s ON s.fixture_id = q.fixture_id
              WHERE q.is_open AND q.received_at < s.start_time AND s.start_time <= now()
                AND q.fixture_id IN (SELECT fixture_id FROM taken)) AS ranked
        WHERE nth = 1) AS closing WHERE coalesce(player_id, '0') = '0') AS ranked
        WHERE nth = 1
    ), consensus AS (
        SELECT fixture_id, outcome_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY fair_prob) AS fair_prob,
               count(*) AS bookmakers
        FROM (SELECT *, CASE WHEN 'multiplicative' = 'shin' AND book_sum > 1
         THEN (sqrt(method_parameter * method_parameter + 4 * (1 - method_parameter) * implied_prob * implied_prob
                    / book_sum) - method_parameter) / (2 * (1 - method_parameter))
         WHEN 'multiplicative' = 'power' THEN power(implied_prob, method_parameter)
         ELSE implied_prob / book_sum END AS fair_prob
              FROM (
    SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, price,
        implied_prob, book_sum, outcomes,
           max(first_parameter) OVER (PARTITION BY source, bookmaker, fixture_id, market_id, side) AS
               method_parameter
    FROM (SELECT *, CASE WHEN nth = 1 AND priced = outcomes AND 'multiplicative' <> 'multiplicative'
                          AND NOT ('multiplicative' = 'shin' AND book_sum <= 1)
                         THEN margin_parameter(implied_all, 'multiplicative') END AS first_parameter
          FROM (SELECT *, 1 / price AS implied_prob,
                       sum(1 / price) OVER book AS book_sum, array_agg(1 / price) OVER book AS implied_all,
                       count(*) OVER book AS priced, row_number() OVER book AS nth
                FROM (SELECT *, max(outcome_rank) OVER (PARTITION BY source, fixture_id, market_id, side) AS
                    outcomes
                      FROM (SELECT *, dense_rank() OVER (PARTITION BY source, fixture_id, market_id, side
                                                         ORDER BY outcome_id, player_id, line) AS outcome_rank
                            FROM (
        SELECT source, bookmaker, fixture_id, market_id, outcome_id, player_id, line, side, received_at, price,
            is_open
        FROM (SELECT q.*, row_number() OVER (PARTITION BY q.source, q.bookmaker, q.fixture_id, q.market_id,
            q.outcome_id, q.player_id, q.line, q.side ORDER BY q.received_at DESC, q.raw_id DESC) AS nth
              FROM observed_quotes AS q JOIN starts AS s ON s.fixture_id = q.fixture_id
              WHERE q.is_open AND q.received_at < s.start_time AND s.start_time <= now()
                AND q.fixture_id IN (SELECT fixture_id FROM taken)) AS ranked
        WHERE nth = 1) AS closing) AS ranked) AS counted
                WHERE is_open
                WINDOW book AS (PARTITION BY source, bookmaker, fixture_id, market_id, side)) AS open_prices) AS
                    solved
    WHERE priced = outcomes AND outcomes >= 2
    ) AS fair) AS fair
        WHERE coalesce(player_id, '0') = '0'
        GROUP BY fixture_id, outcome_id
    )
    SELECT kind, bet_id, order_id, source, bookmaker, fixture_id, outcome_id, taken_at, taken_price, stake,
           in_play, closing_at, closing_price, taken_price / closing_price - 1 AS clv_pct,
           1 / closing_price - 1 / taken_price AS clv_prob,
           fair_closing_prob, 1 / fair_closing_prob AS fair_closing_price,
           taken_price * fair_closing_prob - 1 AS fair_clv_pct, fair_closing_prob - 1 / taken_price AS
               fair_clv_prob,
           consensus_bookmakers
    FROM (SELECT t.*, CASE WHEN t.closing_at IS NOT NULL THEN b.price END AS closing_price,
                 CASE WHEN t.closing_at IS NOT NULL THEN n.fair_prob END AS fair_closing_prob,
                 CASE WHEN t.closing_at IS NOT NULL THEN n.bookmakers END AS consensus_bookmakers
          FROM (SELECT k.*, k.taken_at >= s.start_time AS in_play,
                       CASE WHEN k.taken_at < s.start_time AND s.start_time <= now() THEN s.start_time END AS
                           closing_at
                FROM taken AS k LEFT JOIN starts AS s ON s.fixture_id = k.fixture_id) AS t
          -- (only equalities in ON: anything else there stops DuckDB passing a fixture filter to the right side)
          LEFT JOIN same_book AS b ON b.fixture_id = t.fixture_id AND b.outcome_id = t.outcome_id
                                  AND b.book = t.bookmaker
          LEFT JOIN consensus AS n ON n.fixture_id = t.fixture_id AND n.outcome_id = t.outcome_id) AS valued
""",
    "COMMENT ON VIEW closing_line_value IS 'Did the desk beat the close? Every MM hedge bet and every "
    "filled MM order (an order''s price is orderCents, a probability: taken_price is its inverse), "
    "against the closing line of its fixture and outcome: the last open price before the fixture''s "
    'start time (the latest any feed gave) at the same bookmaker (for an order: its exchange, where a '
    'feed prices it), and the consensus fair probability then (median over bookmakers, margin taken '
    'out in proportion). clv_pct = taken / closing - 1; clv_prob and fair_clv_prob in implied '
    'probability points (positive: beat the close). Null while the fixture has no start time or has '
    'not started, and for bets taken in play (in_play). Time basis: received_at (taken_at is the '
    "first row of the bet, or the order''s FILLED row).'",
)
DROP: tuple[str, ...] = (  # in reverse order
    """DROP VIEW IF EXISTS closing_line_value""",
    """DROP FUNCTION IF EXISTS arbitrage_windows(double precision, timestamptz, timestamptz)""",
    """DROP FUNCTION IF EXISTS lead_lag(double precision, interval, timestamptz, timestamptz, text)""",
    """DROP FUNCTION IF EXISTS consensus_as_of(timestamptz, text)""",
    """DROP FUNCTION IF EXISTS fair_prices_as_of(timestamptz, text)""",
    """DROP FUNCTION IF EXISTS best_prices_as_of(timestamptz)""",
    """DROP FUNCTION IF EXISTS steam_moves(double precision, integer, interval, timestamptz, timestamptz, interval)""",
    """DROP FUNCTION IF EXISTS margin_parameter(double precision[], text)""",
    """DROP VIEW IF EXISTS observed_quotes""",
    """DROP VIEW IF EXISTS market_overround""",
    """DROP FUNCTION IF EXISTS price_candles(interval)""",
    """DROP VIEW IF EXISTS opening_closing_lines""",
    """DROP FUNCTION IF EXISTS prices_as_of(timestamptz)""",
    """DROP VIEW IF EXISTS price_history""",
    """DROP VIEW IF EXISTS observed_ticks""",
)
VIEWS = 'observed_ticks, price_history, opening_closing_lines, market_overround, observed_quotes, closing_line_value'


def _sql(statement: str) -> None:
    op.execute(text(statement))


def _name(statement: str) -> str:
    """The relation a CREATE, COMMENT or DROP statement is about."""
    found = re.match(r"\s*(?:CREATE|COMMENT ON|DROP) (?:VIEW|FUNCTION) (?:IF EXISTS )?(\w+)", statement)
    assert found, statement
    return found[1]


def _words(statement: str) -> str:
    return " ".join(statement.split())


def _replace(create: tuple[str, ...], before: tuple[str, ...]) -> None:
    """Each relation of `create` whose text differs from `before`'s, replaced in place (CREATE OR
    REPLACE: the same columns, so the views and grants built on it stay), with its comment."""
    same = {_words(statement) for statement in before}
    changed = {_name(statement) for statement in create if _words(statement) not in same}
    for statement in create:
        if _name(statement) in changed:
            _sql(re.sub(r"^\s*CREATE (VIEW|FUNCTION)", r"CREATE OR REPLACE \1", statement))


def upgrade() -> None:
    _replace(CREATE, _previous().CREATE)


def downgrade() -> None:
    _replace(_previous().CREATE, CREATE)


def _previous() -> ModuleType:
    """The migration whose relations this one changes, and restores on downgrade."""
    return context.script.get_revision(PREVIOUS).module
