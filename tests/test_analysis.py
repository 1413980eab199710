"""Line-movement relations: exact answers on a scripted market, the same on PostgreSQL and on Parquet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from tests.conftest import query, write_frames
from warehouse import analysis
from warehouse.lifecycle.export import export_day
from warehouse.records import FixtureChange, PriceTick

CONN = UUID("0b7e7d3c-5f7c-4a8e-9d2f-333333333333")  # tests/test_timescaledb.py writes FRAMES with it
DAY = datetime.now(UTC).date() - timedelta(days=1)
T = datetime(DAY.year, DAY.month, DAY.day, 10, tzinfo=UTC)
START = T + timedelta(minutes=60)
S = timedelta(seconds=1)
M = timedelta(minutes=1)


def tick(when: datetime, book: str, outcome: str, price: float | None, **extra) -> PriceTick:
    return PriceTick(when, "oddspapi", book, "F1", "101", outcome, price, **extra)


# One frame per entry: (time, records). A, B and C shorten outcome 101 within 30 s (steam, A first);
# D drifts alone; A is suspended, comes back, then moves in play (after START).
FRAMES: list[tuple[datetime, list]] = [
    (T - 5 * M, [FixtureChange(T - 5 * M, "oddspapi", "F1", "add", start_time=START, status="pre")]),
    (T, [tick(T, "A", "101", 2.00), tick(T, "A", "102", 1.90)]),
    (T, [tick(T, "B", "101", 2.00), tick(T, "B", "102", 1.90)]),
    (T, [tick(T, "C", "101", 2.00), tick(T, "D", "101", 2.00)]),
    (T + 10 * S, [tick(T + 10 * S, "A", "101", 1.80)]),
    (T + 20 * S, [tick(T + 20 * S, "B", "101", 1.85)]),
    (T + 30 * S, [tick(T + 30 * S, "C", "101", 1.88)]),
    (T + 40 * S, [tick(T + 40 * S, "D", "101", 2.20)]),
    (T + 30 * M, [tick(T + 30 * M, "A", "101", None, active=False, status="suspended")]),
    (T + 50 * M, [tick(T + 50 * M, "A", "101", 1.70, active=True)]),
    (T + 70 * M, [tick(T + 70 * M, "A", "101", 1.50, active=True)]),
]


def write_market(url: str, spool: Path) -> str:
    return write_frames(url, spool, FRAMES, "oddspapi")


@pytest.fixture
def market(storage_url: str, tmp_path: Path) -> str:
    """The scripted market, on each storage."""
    return write_market(storage_url, tmp_path / "spool")


def pg(url: str, sql: str, *params: object) -> list[tuple]:
    return query(url, sql, *params)


def same(rows: list[tuple]) -> list[tuple]:
    """Rows in a form both engines agree on: UTC datetimes, floats to 12 digits, lists as tuples."""
    def value(v):
        if isinstance(v, datetime):
            return v.astimezone(UTC)
        if isinstance(v, float):
            return round(v, 12)
        if isinstance(v, Decimal):
            return round(float(v), 12)
        if isinstance(v, list):
            return tuple(v)
        return v
    return [tuple(value(v) for v in row) for row in rows]


HISTORY = ("SELECT received_at, bookmaker, outcome_id, price, prev_price, move, move_pct, implied_prob, active"
           " FROM price_history WHERE fixture_id = 'F1' AND market_id = '101' AND bookmaker = 'A'"
           " AND outcome_id = '101' ORDER BY received_at")


def test_price_history_has_previous_price_move_and_implied_probability(market: str) -> None:
    rows = pg(market, HISTORY)
    assert [(r[0], r[3], r[4]) for r in rows] == [
        (T, 2.00, None), (T + 10 * S, 1.80, 2.00), (T + 50 * M, 1.70, 1.80), (T + 70 * M, 1.50, 1.70),
    ]  # the suspension (no price) is not a price: 1.70's previous price is 1.80
    assert rows[1][5] == pytest.approx(-0.2) and rows[1][6] == pytest.approx(-0.1)
    assert rows[1][7] == pytest.approx(1 / 1.8)
    assert rows[0][5] is None and rows[0][6] is None


def test_prices_as_of_gives_each_selections_state_at_that_time(market: str) -> None:
    rows = pg(market, "SELECT bookmaker, outcome_id, price, active, received_at FROM prices_as_of(%s)"
                      " ORDER BY bookmaker, outcome_id", T + 35 * M)
    assert rows == [("A", "101", None, False, T + 30 * M), ("A", "102", 1.90, None, T),
                    ("B", "101", 1.85, None, T + 20 * S), ("B", "102", 1.90, None, T),
                    ("C", "101", 1.88, None, T + 30 * S), ("D", "101", 2.20, None, T + 40 * S)]
    assert pg(market, "SELECT count(*) FROM prices_as_of(%s)", T - S) == [(0,)]


def test_opening_and_closing_lines_close_at_the_start_time(market: str) -> None:
    rows = pg(market, "SELECT bookmaker, outcome_id, start_time, opening_at, opening_price, closing_at,"
                      " closing_price, ticks FROM opening_closing_lines ORDER BY bookmaker, outcome_id")
    assert rows[0] == ("A", "101", START, T, 2.00, T + 50 * M, 1.70, 4)  # 1.50 came in play
    assert rows[2] == ("B", "101", START, T, 2.00, T + 20 * S, 1.85, 2)
    assert len(rows) == 6


def test_candles_of_any_width(market: str) -> None:
    hourly = pg(market, "SELECT bucket, open, high, low, close, ticks FROM price_candles('1 hour')"
                        " WHERE bookmaker = 'A' AND outcome_id = '101' ORDER BY bucket")
    assert hourly == [(T, 2.00, 2.00, 1.70, 1.70, 3), (T + 60 * M, 1.50, 1.50, 1.50, 1.50, 1)]
    minute = pg(market, "SELECT bucket, open, close, ticks FROM price_candles('1 minute') ORDER BY 1, 2, 3, 4")
    assert minute == pg(market, "SELECT bucket, open, close, ticks FROM price_candles_1m ORDER BY 1, 2, 3, 4")


def test_overround_follows_every_frame(market: str) -> None:
    rows = pg(market, "SELECT received_at, outcomes_priced, book_sum, overround FROM market_overround"
                      " WHERE bookmaker = 'A' ORDER BY received_at")
    assert [(r[0], r[1]) for r in rows] == [(T, 2), (T + 10 * S, 2), (T + 30 * M, 1), (T + 50 * M, 2),
                                            (T + 70 * M, 2)]
    assert rows[0][2] == pytest.approx(1 / 2.0 + 1 / 1.9) and rows[0][3] == pytest.approx(1 / 2.0 + 1 / 1.9 - 1)
    assert rows[1][2] == pytest.approx(1 / 1.8 + 1 / 1.9)
    assert rows[2][2] == pytest.approx(1 / 1.9)
    assert rows[4][2] == pytest.approx(1 / 1.5 + 1 / 1.9)


def test_steam_moves_name_the_first_mover(market: str) -> None:
    rows = pg(market, "SELECT fixture_id, market_id, outcome_id, direction, started_at, first_bookmaker,"
                      " first_from, first_to, bookmakers, movers, ended_at FROM steam_moves(0.05, 3, '1 minute')")
    assert rows == [("F1", "101", "101", "shortened", T + 10 * S, "A", 2.00, 1.80, 3, ["A", "B", "C"], T + 30 * S)]
    assert pg(market, "SELECT count(*) FROM steam_moves(0.05, 4, '1 minute')") == [(0,)]
    assert pg(market, "SELECT count(*) FROM steam_moves(0.05, 3, '15 seconds')") == [(0,)]
    assert pg(market, "SELECT count(*) FROM steam_moves(0.08, 2, '1 minute')") == [(0,)]  # only A moved 8 %+


# Every relation, queried with a total order so that both engines' rows can be compared in order.
QUERIES: list[tuple[str, tuple]] = [
    (HISTORY, ()),
    ("SELECT * FROM prices_as_of(%s) ORDER BY bookmaker, outcome_id", (T + 35 * M,)),
    ("SELECT * FROM opening_closing_lines ORDER BY bookmaker, outcome_id", ()),
    ("SELECT * FROM price_candles(INTERVAL '7 minutes') ORDER BY bucket, bookmaker, outcome_id", ()),
    ("SELECT * FROM price_candles_1m ORDER BY bucket, bookmaker, outcome_id", ()),
    ("SELECT * FROM market_overround ORDER BY received_at, raw_id, bookmaker", ()),
    ("SELECT * FROM steam_moves(0.05, 2, INTERVAL '1 minute') ORDER BY started_at", ()),
]


def test_parquet_answers_exactly_like_postgresql(market: str, tmp_path: Path) -> None:
    export_dir = tmp_path / "export"
    for table in ("price_ticks", "fixture_changes"):
        export_day(market, export_dir, table, DAY)
    con = analysis.connect(export_dir=export_dir)
    for sql, params in QUERIES:
        expected = same(pg(market, sql, *params))
        assert expected, f"the scripted market must give rows for {sql}"
        assert same(con.execute(sql.replace("%s", "?"), list(params)).fetchall()) == expected, sql


def test_parquet_connection_works_before_anything_is_exported(tmp_path: Path) -> None:
    con = analysis.connect(export_dir=tmp_path)
    assert con.execute("SELECT count(*) FROM price_history").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM steam_moves(0.05, 2, INTERVAL '1 minute')").fetchall() == [(0,)]


def test_reader_role_can_query_the_relations(market: str) -> None:
    with psycopg.connect(market, autocommit=True) as conn:
        conn.execute("SET ROLE warehouse_reader")
        for sql in ("SELECT count(*) FROM price_history", "SELECT count(*) FROM market_overround",
                    "SELECT count(*) FROM opening_closing_lines", "SELECT count(*) FROM prices_as_of(now())",
                    "SELECT count(*) FROM steam_moves(0.05, 3, '1 minute')"):
            assert conn.execute(sql).fetchone()[0] > 0, sql


def test_plot_command_draws_from_postgresql_or_parquet(db_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    market = write_market(db_url, tmp_path / "spool")
    export_day(market, tmp_path / "export", "price_ticks", DAY)
    base = [sys.executable, "-m", "warehouse", "--database-url", market, "plot"]
    for extra in ([], ["--parquet", str(tmp_path / "export"), "--consensus", "shin", "--arbitrage", "0"]):
        out = tmp_path / f"chart{len(extra)}.png"
        result = subprocess.run([*base, "--fixture", "F1", "--market", "101", "--out", str(out), *extra],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in result.stdout
    default = subprocess.run(base, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env={**os.environ, "WAREHOUSE_DATA_DIR": str(tmp_path / "data")})
    assert default.returncode == 0  # the busiest market, into the data directory (not the current one)
    assert (tmp_path / "data" / "charts" / "line-F1-101.png").exists() and not list(tmp_path.glob("line-*.png"))
    missing = subprocess.run([*base, "--fixture", "nope", "--market", "1"], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "no prices for fixture nope" in missing.stderr
