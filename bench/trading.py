"""The trading relations (migration 0009) on bench/query.py's 10,000,000-row day: the day's desk, and
what each relation costs for one fixture and for the whole day.

Used by bench/query.py (`--relations`, the default). The day's ticks are bench/export.py's generator:
400 fixtures × 4 markets × 3 outcomes × 8 bookmakers, 25,000 ticks a fixture spread over the day. Its
prices are a function of the row number, not a walk: nearly every tick moves its selection by 3 % or
more, so steam and lead/lag find ~24,000 moves a fixture — a stress case (real markets move that much a
handful of times an hour). To it this adds what the relations also read: a start time for every
fixture (18:00) and the desk's day, 2,000 MM orders filled before the start and hedged by a bet each.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

BOOKMAKERS = "ARRAY['pinnacle','bet365','stake','22bet','starcasino.be','betfair-ex','1xbet','sbobet']"
FIXTURE = "'id10000' || lpad(({n} %% 400)::text, 4, '0') || '61624412'"
DESK = f"""
INSERT INTO fixture_changes (received_at, source, fixture_id, action, start_time)
SELECT %(day)s::timestamptz + f * interval '1 second', 'oddspapi', {FIXTURE.format(n="f")}, 'add',
       %(day)s::timestamptz + interval '18 hours'
FROM generate_series(0, 399) AS f;
INSERT INTO order_changes (received_at, source, event, order_id, fixture_id, outcome_id, exchange, order_status,
                           price, stake, matched_stake)
SELECT %(day)s::timestamptz + (o * 30 + step) * interval '1 second', 'mm', event, o::text,
       CASE WHEN step = 0 THEN {FIXTURE.format(n="o")} END, CASE WHEN step = 0 THEN (101 + o %% 3)::text END,
       CASE WHEN step = 0 THEN 'polymarket' END, status, CASE WHEN step = 0 THEN 0.45 END,
       CASE WHEN step = 0 THEN 100 END, CASE WHEN step = 1 THEN 100 END
FROM generate_series(0, 1999) AS o,
     (VALUES (0, 'INSERT', 'PENDING_PLACEMENT'), (1, 'UPDATE', 'FILLED')) AS lifecycle(step, event, status);
INSERT INTO bet_changes (received_at, source, event, bet_id, order_id, bookmaker, bet_status, price, stake)
SELECT %(day)s::timestamptz + (o * 30 + 2) * interval '1 second', 'mm', 'INSERT', (o * 10)::text, o::text,
       ({BOOKMAKERS})[1 + o %% 8], 'placed', 2.0, 100
FROM generate_series(0, 1999) AS o;
"""
DESK_TABLES = ("fixture_changes", "order_changes", "bet_changes")


def fill_desk(url: str, day: date) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in DESK.split(";"):
            if statement.strip():
                conn.execute(statement, {"day": day.isoformat()})
        for table in DESK_TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")


def relations(day: date) -> list[tuple[str, str, str | None]]:
    """(name, one fixture's query with a %s for the fixture, the whole day's or None)."""
    noon = f"TIMESTAMPTZ '{datetime(day.year, day.month, day.day, 12):%Y-%m-%d %H:%M:%S}+00'"
    since, until = f"TIMESTAMPTZ '{day}'", f"TIMESTAMPTZ '{day + timedelta(days=1)}'"
    return [
        ("best_prices_as_of(noon)", f"SELECT * FROM best_prices_as_of({noon}) WHERE fixture_id = %s",
         f"SELECT * FROM best_prices_as_of({noon})"),
        ("fair_prices_as_of(noon, 'shin')", f"SELECT * FROM fair_prices_as_of({noon}, 'shin') WHERE fixture_id = %s",
         f"SELECT * FROM fair_prices_as_of({noon}, 'shin')"),
        ("consensus_as_of(noon, 'shin')", f"SELECT * FROM consensus_as_of({noon}, 'shin') WHERE fixture_id = %s",
         f"SELECT * FROM consensus_as_of({noon}, 'shin')"),
        ("steam_moves(0.03, 2, 1 min, day)",
         f"SELECT * FROM steam_moves(0.03, 2, INTERVAL '1 minute', {since}, {until}) WHERE fixture_id = %s",
         f"SELECT count(*) FROM steam_moves(0.03, 2, INTERVAL '1 minute', {since}, {until})"),
        ("lead_lag(0.03, 1 min, day)",
         f"SELECT * FROM lead_lag(0.03, INTERVAL '1 minute', {since}, {until}, %s)",
         f"SELECT * FROM lead_lag(0.03, INTERVAL '1 minute', {since}, {until})"),
        ("arbitrage_windows(0.0, day)",
         f"SELECT * FROM arbitrage_windows(0.0, {since}, {until}) WHERE fixture_id = %s",
         f"SELECT count(*) FROM arbitrage_windows(0.0, {since}, {until})"),
        ("closing_line_value", "SELECT * FROM closing_line_value WHERE fixture_id = %s",
         "SELECT * FROM closing_line_value"),
    ]


def _median(run: Callable[[str], int], fixtures: list[str]) -> tuple[float, int]:
    """Median ms over `fixtures` (after one warm-up), and the rows of the last."""
    run(fixtures[0])
    times, rows = [], 0
    for fixture in fixtures:
        started = time.perf_counter()
        rows = run(fixture)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), rows


def _once(run: Callable[[], int], cancel: Callable[[], None], timeout_s: float) -> tuple[float | None, int]:
    """Milliseconds of one run (None: cancelled after `timeout_s`), and its rows."""
    timer = threading.Timer(timeout_s, cancel)
    timer.start()
    started = time.perf_counter()
    try:
        rows = run()
    except Exception as exc:  # the engine's own "cancelled"/"interrupted"
        if time.perf_counter() - started < timeout_s:
            raise
        print(f"  stopped after {timeout_s:.0f} s ({type(exc).__name__})", flush=True)
        return None, 0
    finally:
        timer.cancel()
    return (time.perf_counter() - started) * 1000, rows


def measure(url: str, surface: Any, day: date, fixtures: list[str], whole_day: bool,
            timeout_s: float) -> list[tuple[str, str, float | None, int, float | None, int]]:
    """Per relation and engine: (relation, engine, one fixture median ms, its rows, whole day ms (None: not run,
    or stopped), its rows (-1: not run))."""
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        engines: dict[str, tuple[Callable[[str, tuple[Any, ...]], int], Callable[[], None]]] = {
            "PostgreSQL": (lambda sql, params: len(conn.cursor(binary=True).execute(sql, params).fetchall()),
                           lambda: conn.cancel_safe()),
            "query surface": (lambda sql, params: surface.execute(sql.replace("%s", "?"), list(params))
                              .to_arrow_table().num_rows, surface.interrupt),
        }
        for name, one, whole in relations(day):
            for engine, (run, cancel) in engines.items():
                print(f"{name} on {engine} …", flush=True)
                fixture_ms, fixture_rows = _median(lambda f, run=run, one=one: run(one, (f,)), fixtures)
                whole_ms, whole_rows = None, -1  # -1: not run
                if whole_day and whole is not None:
                    whole_ms, whole_rows = _once(lambda run=run, whole=whole: run(whole, ()), cancel, timeout_s)
                out.append((name, engine, fixture_ms, fixture_rows, whole_ms, whole_rows))
    return out
