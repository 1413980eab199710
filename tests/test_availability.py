"""A price that cannot be bet is not active (DESIGN rule 9, issue 23 §1, docs/availability.md).

OddsPapi marks availability at three levels: the price's own `active`, the market's `marketActive`
and the bookmaker's `suspended` / `bookmakerIsActive` — the last two sent alone as partial updates
on the WebSocket. Every relation agrees on what is open: observed_ticks, prices_as_of,
market_overround, the chart's rows and the trader relations (observed_quotes.is_open), on every
storage and on the query surface.

The market (fixture F1, bookmakers A and B, 1X2 market 101 and a two-way market 104):

    T          A 101 2.00 102 3.50 103 4.00, 104/105 1.90 1.90;  B 101 2.10 102 3.40 103 3.80, 104/105 1.80 2.00
    T + 10 s   A suspended (a frame with nothing else)
    T + 20 s   B's market 101 inactive (marketActive false)
    T + 25 s   B 101 2.20 (the price itself says active: its market is closed)
    T + 30 s   A not suspended: reopens at its last prices
    T + 35 s   A bookmakerIsActive false
    T + 40 s   A not suspended (still inactive: a partial update changes one flag)
    T + 50 s   A bookmakerIsActive true: open again
    T + 60 s   B's market 101 active again
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.conftest import query, write_frames
from tests.exact import comparable
from tests.golden import FIXTURES, run
from warehouse import analysis
from warehouse.analysis import plot
from warehouse.analysis.engine import Engine
from warehouse.feeds.oddspapi import Adapter
from warehouse.lifecycle.export import export_day
from warehouse.records import FixtureChange, MarketChange, PriceTick
from warehouse.simulate.market import Market
from warehouse.simulate.oddspapi import OddsPapiSimulator

DAY = datetime.now(UTC).date() - timedelta(days=1)
T = datetime(DAY.year, DAY.month, DAY.day, 10, tzinfo=UTC)
S = timedelta(seconds=1)
A_PRICES = {("101", "101"): 2.00, ("101", "102"): 3.50, ("101", "103"): 4.00, ("104", "104"): 1.90,
            ("104", "105"): 1.90}
B_PRICES = {("101", "101"): 2.10, ("101", "102"): 3.40, ("101", "103"): 3.80, ("104", "104"): 1.80,
            ("104", "105"): 2.00}


def prices(when: datetime, book: str, quoted: dict[tuple[str, str], float]) -> list[PriceTick]:
    return [PriceTick(when, "oddspapi", book, "F1", market, outcome, price, player_id="0", active=True)
            for (market, outcome), price in quoted.items()]


def book(when: datetime, name: str, **flags: bool) -> list:
    return [FixtureChange(when, "oddspapi", "F1", "change", bookmaker=name, changes=flags)]


def market_flag(when: datetime, name: str, market: str, active: bool) -> list:
    return [MarketChange(when, "oddspapi", "F1", market, "change", bookmaker=name, attrs={"marketActive": active})]


FRAMES: list[tuple[datetime, list]] = [
    (T, prices(T, "A", A_PRICES)),
    (T, prices(T, "B", B_PRICES)),
    (T + 10 * S, book(T + 10 * S, "A", suspended=True)),
    (T + 20 * S, market_flag(T + 20 * S, "B", "101", False)),
    (T + 25 * S, prices(T + 25 * S, "B", {("101", "101"): 2.20})),
    (T + 30 * S, book(T + 30 * S, "A", suspended=False)),
    (T + 35 * S, book(T + 35 * S, "A", bookmakerIsActive=False)),
    (T + 40 * S, book(T + 40 * S, "A", suspended=False)),
    (T + 50 * S, book(T + 50 * S, "A", bookmakerIsActive=True)),
    (T + 60 * S, market_flag(T + 60 * S, "B", "101", True)),
]


@pytest.fixture
def market(storage_url: str, tmp_path: Path) -> str:
    return write_frames(storage_url, tmp_path / "spool", FRAMES, "oddspapi")


AS_OF = ("SELECT bookmaker, market_id, outcome_id, price, active, received_at FROM prices_as_of(%s)"
         " WHERE fixture_id = 'F1' ORDER BY bookmaker, market_id, outcome_id")


def as_of(url: str, when: datetime) -> dict[tuple[str, str, str], tuple[float, bool, datetime]]:
    return {(b, m, o): (price, active, at) for b, m, o, price, active, at in query(url, AS_OF, when)}


def test_a_suspended_bookmaker_is_not_active_at_its_last_prices(market: str) -> None:
    before, during = as_of(market, T + 5 * S), as_of(market, T + 15 * S)
    for (m, o), price in A_PRICES.items():
        assert before["A", m, o] == (price, True, T)
        assert during["A", m, o] == (price, False, T + 10 * S)  # every market of the bookmaker on the fixture
        assert during["B", m, o][1] is True  # another bookmaker is not touched


def test_an_inactive_market_closes_its_prices_even_those_sent_while_it_is_closed(market: str) -> None:
    closed = as_of(market, T + 27 * S)
    assert closed["B", "101", "101"] == (2.20, False, T + 25 * S)
    assert closed["B", "101", "102"] == (3.40, False, T + 20 * S)
    assert closed["B", "104", "104"] == (1.80, True, T)  # the bookmaker's other market stays open
    reopened = as_of(market, T + 61 * S)
    assert reopened["B", "101", "101"] == (2.20, True, T + 60 * S)


def test_lifting_a_suspension_reopens_at_the_last_prices_unless_another_flag_is_closed(market: str) -> None:
    for when, open_, since in ((T + 32 * S, True, T + 30 * S), (T + 37 * S, False, T + 35 * S),
                               (T + 45 * S, False, T + 35 * S), (T + 55 * S, True, T + 50 * S)):
        state = as_of(market, when)
        for (m, o), price in A_PRICES.items():
            assert state["A", m, o] == (price, open_, since), when


def test_observed_ticks_has_a_row_where_availability_changed_and_nowhere_else(market: str) -> None:
    rows = query(market, "SELECT received_at, price, active, raw_id IS NOT NULL FROM observed_ticks"
                         " WHERE fixture_id = 'F1' AND bookmaker = 'A' AND outcome_id = '101' ORDER BY received_at")
    assert rows == [(T, 2.0, True, True), (T + 10 * S, 2.0, False, True), (T + 30 * S, 2.0, True, True),
                    (T + 35 * S, 2.0, False, True), (T + 50 * S, 2.0, True, True)]  # not at T + 40 s: nothing changed


def test_market_overround_and_the_screen_drop_a_suspended_bookmaker(market: str) -> None:
    overround = query(market, "SELECT received_at, outcomes_priced FROM market_overround"
                              " WHERE fixture_id = 'F1' AND bookmaker = 'A' AND market_id = '101' ORDER BY received_at")
    assert overround == [(T, 3), (T + 10 * S, 0), (T + 30 * S, 3), (T + 35 * S, 0), (T + 50 * S, 3)]
    best = query(market, "SELECT outcome_id, best_price, best_bookmakers FROM best_prices_as_of(%s)"
                         " WHERE fixture_id = 'F1' AND market_id = '101' ORDER BY outcome_id", T + 15 * S)
    assert best == [("101", 2.10, ["B"]), ("102", 3.40, ["B"]), ("103", 3.80, ["B"])]
    assert query(market, "SELECT count(*) FROM fair_prices_as_of(%s) WHERE fixture_id = 'F1' AND bookmaker = 'A'",
                 T + 15 * S) == [(0,)]


def test_the_chart_breaks_the_line_while_suspended(market: str) -> None:
    chart = plot.chart_data(Engine.warehouse(market), "F1", "101")
    (home,) = [s for s in chart.selections if s.label.startswith("Home")]
    times, values = home.series["A"]
    assert [t.astimezone(UTC) for t in times] == [T, T + 10 * S, T + 30 * S, T + 35 * S, T + 50 * S]
    assert [math.isnan(v) for v in values] == [False, True, False, True, False]
    assert values[2] == pytest.approx(100 / 2.0)


def test_the_query_surface_agrees_row_for_row(market: str) -> None:
    con = analysis.connect(market)
    for sql in ("SELECT * FROM observed_ticks ORDER BY received_at, bookmaker, market_id, outcome_id",
                f"SELECT * FROM prices_as_of(TIMESTAMPTZ '{(T + 37 * S).isoformat()}')"
                " ORDER BY bookmaker, market_id, outcome_id",
                "SELECT * FROM market_overround ORDER BY received_at, bookmaker, market_id",
                "SELECT * FROM arbitrage_windows(0.0) ORDER BY started_at"):
        assert [comparable(r) for r in con.execute(sql).fetchall()] == [comparable(r) for r in query(market, sql)], sql


def test_the_parquet_lake_alone_agrees(db_url: str, tmp_path: Path) -> None:
    """The flags are exported with their tables: a lake without PostgreSQL gives the same states."""
    url = write_frames(db_url, tmp_path / "spool", FRAMES, "oddspapi")
    for table in ("price_ticks", "fixture_changes", "market_changes"):
        export_day(url, tmp_path / "export", table, DAY)
    con = analysis.connect(None, tmp_path / "export")
    sql = (f"SELECT bookmaker, market_id, outcome_id, price, active, received_at FROM prices_as_of(TIMESTAMPTZ"
           f" '{(T + 37 * S).isoformat()}') ORDER BY bookmaker, market_id, outcome_id")
    expected = [comparable(r) for r in query(url, sql)]
    assert [r[4] for r in expected] == [False] * 5 + [False, False, False, True, True]
    assert [comparable(r) for r in con.execute(sql).fetchall()] == expected


def test_a_whole_odds_answer_with_a_suspended_bookmaker_and_an_inactive_market(db_url: str, tmp_path: Path) -> None:
    """The golden /v4/odds answer, as the adapter derives it, stored and read back: 1xbet's prices say
    active but the bookmaker is suspended; pinnacle's market 10121 is inactive. Then the WebSocket's
    partial updates reopen them, at their last prices."""
    golden = FIXTURES / "oddspapi-ws" / "odds-answer-suspended-bookmaker.json"
    results = run(golden)
    at = results[0].records[0].received_at
    frames = [(at + i * S, [r._replace(received_at=at + i * S) for r in result.records])
              for i, result in enumerate(results)]
    url = write_frames(db_url, tmp_path / "spool", frames, "oddspapi")
    sql = ("SELECT bookmaker, market_id, outcome_id, price, active FROM prices_as_of(%s)"
           " ORDER BY bookmaker, market_id, outcome_id")
    assert query(url, sql, at) == [
        ("1xbet", "101", "101", 2.0, False), ("1xbet", "101", "102", 3.6, False), ("1xbet", "101", "103", 4.1, False),
        ("pinnacle", "101", "101", 2.05, True), ("pinnacle", "101", "102", 3.75, True),
        ("pinnacle", "101", "103", 4.0, True),
        ("pinnacle", "10121", "10121", 1.9, False), ("pinnacle", "10121", "10122", 1.95, False)]
    assert query(url, sql, at + 2 * S) == [
        ("1xbet", "101", "101", 2.0, True), ("1xbet", "101", "102", 3.6, True),
        ("1xbet", "101", "103", 4.1, False),  # the price itself is inactive
        ("pinnacle", "101", "101", 2.05, True), ("pinnacle", "101", "102", 3.75, True),
        ("pinnacle", "101", "103", 4.0, True),
        ("pinnacle", "10121", "10121", 1.9, True), ("pinnacle", "10121", "10122", 1.95, True)]


# -- an as-of function reads history up to as_of only (migration 0018) -----------------------------
#
# Its windows only look back, so observed_ticks bounded at as_of inside the function must give what the
# view gives up to as_of. The cases the bound could get wrong: a suspension before as_of lifted after it,
# a flag frame exactly at as_of, and a frame whose flags and prices come together (the flags apply to
# the prices: the flag row itself gives no row).
EDGES: list[tuple[datetime, list]] = [
    (T, prices(T, "A", A_PRICES)),
    (T + 10 * S, book(T + 10 * S, "A", suspended=True)),
    (T + 20 * S, book(T + 20 * S, "A", suspended=False) + prices(T + 20 * S, "A", {("101", "101"): 2.50})),
    (T + 30 * S, market_flag(T + 30 * S, "A", "101", False) + prices(T + 30 * S, "A", {("101", "102"): 3.60})),
    (T + 40 * S, market_flag(T + 40 * S, "A", "101", True)),
]
LAST_OF_THE_VIEW = ("SELECT DISTINCT ON (bookmaker, market_id, outcome_id) bookmaker, market_id, outcome_id, price,"
                    " active, received_at, raw_id FROM observed_ticks WHERE fixture_id = 'F1' AND received_at <= %s"
                    " ORDER BY bookmaker, market_id, outcome_id, received_at DESC, raw_id DESC")
LAST_AS_OF = ("SELECT bookmaker, market_id, outcome_id, price, active, received_at, raw_id FROM prices_as_of(%s)"
              " WHERE fixture_id = 'F1' ORDER BY bookmaker, market_id, outcome_id")


def test_as_of_reads_up_to_as_of_and_gives_what_the_view_gives_there(storage_url: str, tmp_path: Path) -> None:
    url = write_frames(storage_url, tmp_path / "spool", EDGES, "oddspapi")
    tiny = timedelta(microseconds=1)
    moments = [when + shift for when, _ in EDGES for shift in (-tiny, 0 * S, tiny, 5 * S)]
    for when in moments:
        assert query(url, LAST_AS_OF, when) == query(url, LAST_OF_THE_VIEW, when), when
    state = {when: as_of(url, when) for when in (T + 10 * S - tiny, T + 10 * S, T + 15 * S, T + 20 * S,
                                                 T + 30 * S, T + 40 * S)}
    for (m, o), price in A_PRICES.items():
        assert state[T + 10 * S - tiny]["A", m, o] == (price, True, T)
        assert state[T + 10 * S]["A", m, o] == (price, False, T + 10 * S)  # a flag frame exactly at as_of
        assert state[T + 15 * S]["A", m, o] == (price, False, T + 10 * S)  # lifted only after as_of
    reopened, closed, open_again = state[T + 20 * S], state[T + 30 * S], state[T + 40 * S]
    assert reopened["A", "101", "101"] == (2.50, True, T + 20 * S)  # the frame's own price, open
    assert reopened["A", "104", "105"] == (1.90, True, T + 20 * S)
    assert closed["A", "101", "102"] == (3.60, False, T + 30 * S)  # priced in the frame that closed its market
    assert closed["A", "101", "101"] == (2.50, False, T + 30 * S)
    assert closed["A", "104", "104"] == (1.90, True, T + 20 * S)
    assert open_again["A", "101", "103"] == (4.00, True, T + 40 * S)
    screen = ("SELECT market_id, outcome_id, best_price FROM best_prices_as_of(%s) WHERE fixture_id = 'F1'"
              " ORDER BY market_id, outcome_id")
    assert query(url, screen, T + 10 * S) == []
    assert query(url, screen, T + 30 * S) == [("104", "104", 1.90), ("104", "105", 1.90)]
    fair = "SELECT count(*) FROM fair_prices_as_of(%s) WHERE fixture_id = 'F1'"
    assert query(url, fair, T + 20 * S) == [(5,)]
    assert query(url, fair, T + 30 * S) == [(2,)]
    con = analysis.connect(url)  # the query surface: DuckDB's text of the same relations
    for when in moments:
        sql = LAST_AS_OF.replace("%s", f"TIMESTAMPTZ '{when.isoformat()}'")
        assert [comparable(r) for r in con.execute(sql).fetchall()] == [comparable(r) for r in query(url, sql)], when


# -- the simulator speaks the real shapes ---------------------------------------------------------

class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulated_match(steps: int) -> tuple[Market, list[tuple[float, dict]]]:
    """One simulated match through kick-off and its first goals, as OddsPapi frames with the market's time."""
    clock = Clock(1_790_000_000.0)
    market = Market(seed=3, fixtures_count=1, match_s=90, kickoff_in_s=10, run=11, clock=clock)
    simulator = OddsPapiSimulator("key", market=market, record=False)
    frames = []
    for _ in range(steps):
        clock.now += 0.05
        frames += [(clock.now, orjson.loads(frame)) for frame in simulator.render(market.step())]
    return market, frames


def test_the_simulator_sends_the_fields_and_suspensions_of_the_real_api() -> None:
    market, frames = simulated_match(1200)
    books = [(at, book, block) for at, frame in frames for book, block in (frame.get("bookmakerOdds") or {}).items()]
    players = [p for _, _, block in books for m in (block.get("markets") or {}).values()
               for o in (m.get("outcomes") or {}).values() for p in o["players"].values()]
    assert {"bookmakerIsActive", "suspended"} <= {k for _, _, block in books for k in block}
    assert all({"priceAmerican", "priceFractional", "mainLine", "bookmakerChangedAt"} <= set(p) for p in players)
    assert all(p["bookmakerChangedAt"].endswith("Z") and len(p["bookmakerChangedAt"]) == 24 for p in players)
    assert all(p["changedAt"].endswith("+00:00") and len(p["changedAt"]) == 32 for p in players)
    assert any(type(p["price"]) is int for p in players) and any(type(p["price"]) is float for p in players)
    # Suspensions at the bookmaker and at the market level, at kick-off and at a goal, each lifted later.
    (fixture,) = market.fixtures
    goal = fixture.script.goal_times[0]
    for moment in (fixture.start_ts, goal):
        book_level = {b for at, b, block in books if moment <= at < moment + 1 and block == {"suspended": True}}
        market_level = {b for at, b, block in books if moment <= at < moment + 1
                        and block == {"markets": {"101": {"marketActive": False}}}}
        assert book_level and market_level and not book_level & market_level, moment
        assert book_level | market_level == set(market.bookmakers)
        lifted = {b for at, b, block in books if at > moment
                  and block in ({"suspended": False}, {"markets": {"101": {"marketActive": True}}})}
        assert lifted == set(market.bookmakers)


def test_a_simulated_match_is_suspended_in_the_relations_at_kick_off(db_url: str, tmp_path: Path) -> None:
    market, frames = simulated_match(400)
    (fixture,) = market.fixtures
    adapter = Adapter("oddspapi")
    stored = []
    for at, frame in frames:
        when = datetime.fromtimestamp(at, UTC)
        stored.append((when, adapter.handle(frame, when).records))
    url = write_frames(db_url, tmp_path / "spool", stored, "oddspapi")
    kickoff = datetime.fromtimestamp(fixture.start_ts, UTC)
    sql = "SELECT bookmaker, bool_or(active) FROM prices_as_of(%s) GROUP BY bookmaker ORDER BY bookmaker"
    assert query(url, sql, kickoff - 2 * S) == [(b, True) for b in sorted(market.bookmakers)]
    assert query(url, sql, kickoff + S / 2) == [(b, False) for b in sorted(market.bookmakers)]
    reopened = [(at, b) for at, b, block in
                ((at, b, block) for at, f in frames for b, block in (f.get("bookmakerOdds") or {}).items())
                if block in ({"suspended": False}, {"markets": {"101": {"marketActive": True}}})]
    last = datetime.fromtimestamp(max(at for at, _ in reopened), UTC)
    assert query(url, sql, last) == [(b, True) for b in sorted(market.bookmakers)]
