"""The relations of migration 0010, what a trader acts on: best prices, fair prices and consensus,
steam after events, who leads, arbitrage windows, closing-line value. Exact answers on a scripted
market that can be checked on paper, on every storage, and the same rows on the query surface
(DuckDB over PostgreSQL).

The market (fixture F1, OddsPapi's 1X2: outcomes 101 home, 102 draw, 103 away), two bookmakers:

    time         A (2.00 4.00 3.20 = 1/2 + 1/4 + 5/16 = 17/16)   B (1.60 4.00 4.00 = 5/8 + 1/4 + 1/4 = 9/8)
    T0 - 60 s    101 2.00, 102 4.00 (no 103 yet)                101 1.60, 102 4.00, 103 4.00
    T0           103 3.20
    T0 + 10 s    101 1.80 (A leads …)
    T0 + 20 s                                                   101 1.50 (… B follows, 10 s later)
    T0 + 40 s    103 3.50 (A leads …)
    T0 + 45 s                                                   103 4.40 (… B follows, 5 s later)
    KO = T0+2min kick-off: score 0-0; both suspend every outcome (prices kept, active false)
    KO + 2 s     both reopen at the same prices
    G = T0+5min  goal, 1-0
    G + 0.5 s    A suspends (no prices)
    G + 1 s                                                     reprices: 1.25 5.00 8.00
    G + 3 s      reopens stale: 1.80 4.00 3.50  → best 1.80 A, 5.00 B, 8.00 B: 5/9 + 1/5 + 1/8 = 317/360
    G + 6 s      reprices: 1.20 5.50 9.00       → the arbitrage (edge 43/360) ends after 3 s

The desk (MM): order O1 (polymarket, orderCents 0.5 = 2.00 on 101) filled at T0 + 5 s and hedged by bet 11
at A at 2.00 at T0 + 6 s; A's closing price of 101 is 1.80. Order O2 and bet 12 come in play; bet 13 is on a
fixture without a start time. Fixtures F2, F3, F5 are single-bookmaker markets with published answers of
Shin's and the power method; F4 has a goal and a move after it with no suspension.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import matplotlib.dates as mdates
import psycopg
import pytest

from tests.conftest import query, write_frames
from tests.exact import comparable
from warehouse import analysis
from warehouse.analysis import plot
from warehouse.analysis.engine import Engine
from warehouse.records import BetChange, FixtureChange, OrderChange, PriceTick, ScoreChange

DAY = datetime.now(UTC).date() - timedelta(days=1)
T0 = datetime(DAY.year, DAY.month, DAY.day, 10, tzinfo=UTC)
S = timedelta(seconds=1)
KO = T0 + timedelta(minutes=2)
G = T0 + timedelta(minutes=5)
G4 = T0 + timedelta(minutes=7)
HOME, DRAW, AWAY = "101", "102", "103"


def tick(when: datetime, book: str, outcome: str, price: float | None, *, fixture: str = "F1", market: str = "101",
         active: bool | None = None) -> PriceTick:
    return PriceTick(when, "oddspapi", book, fixture, market, outcome, price, player_id="0", active=active)


def quotes(when: datetime, book: str, prices: dict[str, float | None], *, active: bool | None = None,
           fixture: str = "F1", market: str = "101") -> list[PriceTick]:
    """One bookmaker's prices in one frame (null price: suspended)."""
    return [tick(when, book, outcome, price, fixture=fixture, market=market,
                 active=False if price is None else active) for outcome, price in prices.items()]


def order(when: datetime, order_id: str, event: str, **fields) -> OrderChange:
    return OrderChange(when, "mm", event, order_id, **fields)


def bet(when: datetime, bet_id: str, order_id: str, book: str, price: str) -> BetChange:
    return BetChange(when, "mm", "INSERT", bet_id, order_id=order_id, bookmaker=book, bet_status="placed",
                     price=Decimal(price), stake=Decimal(100))


def filled(when: datetime, order_id: str, fixture: str, outcome: str, cents: str) -> list[list]:
    """An order placed, then filled: three frames, the later ones partial (as MM's UPDATEs are)."""
    return [[order(when, order_id, "INSERT", fixture_id=fixture, outcome_id=outcome, exchange="polymarket",
                   order_status="PENDING_PLACEMENT", price=Decimal(cents), stake=Decimal(100))],
            [order(when + S / 2, order_id, "UPDATE", order_status="PLACED")],
            [order(when + S, order_id, "UPDATE", order_status="FILLED", matched_stake=Decimal(100))]]


FRAMES: list[tuple[datetime, list]] = [
    (T0 - 2 * S, [FixtureChange(T0 - 2 * S, "oddspapi", "F1", "add", start_time=KO)]),
    (T0 - 60 * S, quotes(T0 - 60 * S, "A", {HOME: 2.00, DRAW: 4.00})),
    (T0 - 60 * S, quotes(T0 - 60 * S, "B", {HOME: 1.60, DRAW: 4.00, AWAY: 4.00})),
    (T0, quotes(T0, "A", {AWAY: 3.20})),
    *[(frame[0].received_at, frame) for frame in filled(T0 + 4 * S, "O1", "F1", HOME, "0.5")],
    (T0 + 6 * S, [bet(T0 + 6 * S, "11", "O1", "A", "2.00")]),
    (T0 + 10 * S, quotes(T0 + 10 * S, "A", {HOME: 1.80})),
    (T0 + 20 * S, quotes(T0 + 20 * S, "B", {HOME: 1.50})),
    (T0 + 40 * S, quotes(T0 + 40 * S, "A", {AWAY: 3.50})),
    (T0 + 45 * S, quotes(T0 + 45 * S, "B", {AWAY: 4.40})),
    (KO, [ScoreChange(KO, "mm", "F1", home_score=0, away_score=0, live=True)]),
    (KO + S / 4, quotes(KO + S / 4, "A", {HOME: 1.80, DRAW: 4.00, AWAY: 3.50}, active=False)),
    (KO + S / 4, quotes(KO + S / 4, "B", {HOME: 1.50, DRAW: 4.00, AWAY: 4.40}, active=False)),
    (KO + 2 * S, quotes(KO + 2 * S, "A", {HOME: 1.80, DRAW: 4.00, AWAY: 3.50}, active=True)),
    (KO + 2 * S, quotes(KO + 2 * S, "B", {HOME: 1.50, DRAW: 4.00, AWAY: 4.40}, active=True)),
    *[(frame[0].received_at, frame) for frame in filled(KO + 30 * S, "O2", "F1", AWAY, "0.25")],
    (KO + 32 * S, [bet(KO + 32 * S, "12", "O2", "B", "4.40")]),
    (G, [ScoreChange(G, "mm", "F1", home_score=1, away_score=0, live=True)]),
    (G + S / 2, quotes(G + S / 2, "A", {HOME: None, DRAW: None, AWAY: None})),
    (G + S, quotes(G + S, "B", {HOME: 1.25, DRAW: 5.00, AWAY: 8.00})),
    (G + 3 * S, quotes(G + 3 * S, "A", {HOME: 1.80, DRAW: 4.00, AWAY: 3.50}, active=True)),
    (G + 6 * S, quotes(G + 6 * S, "A", {HOME: 1.20, DRAW: 5.50, AWAY: 9.00})),
    # a fixture nobody gave a start time: no closing line
    *[(frame[0].received_at, frame) for frame in filled(T0 + 50 * S, "O3", "F9", HOME, "0.4")],
    (T0 + 52 * S, [bet(T0 + 52 * S, "13", "O3", "A", "2.40")]),
    # published answers: shin.calculate_implied_probabilities([2.6, 2.4, 4.3]) and ([1.5, 2.74]) (the
    # `shin` package's README, after Jullien & Salanié 1994 and, for two outcomes, Štrumbelj 2014), and
    # penaltyblog's implied.power / implied.shin of [2.7, 2.3, 4.4] (its "Implied Odds" documentation)
    (T0, quotes(T0, "X", {HOME: 2.6, DRAW: 2.4, AWAY: 4.3}, fixture="F2")),
    (T0, quotes(T0, "X", {"104": 1.5, "105": 2.74}, fixture="F3", market="104")),
    (T0, quotes(T0, "X", {HOME: 2.7, DRAW: 2.3, AWAY: 4.4}, fixture="F5")),
    # F6: three bookmakers on a two-way market: P 1.90 1.90, Q 1.80 1.90, R 1.70 1.90 (fair: 1/2 1/2,
    # 19/37 18/37, 19/36 17/36)
    (T0, quotes(T0, "P", {"104": 1.90, "105": 1.90}, fixture="F6", market="104")),
    (T0, quotes(T0, "Q", {"104": 1.80, "105": 1.90}, fixture="F6", market="104")),
    (T0, quotes(T0, "R", {"104": 1.70, "105": 1.90}, fixture="F6", market="104")),
    # F7: one frame moves A and B at once (one steam episode, not one per bookmaker as in 0007)
    (T0, quotes(T0, "A", {HOME: 2.00, DRAW: 3.40, AWAY: 4.00}, fixture="F7")),
    (T0, quotes(T0, "B", {HOME: 2.00, DRAW: 3.40, AWAY: 4.00}, fixture="F7")),
    (T0 + 10 * S, [*quotes(T0 + 10 * S, "A", {HOME: 1.80}, fixture="F7"),
                   *quotes(T0 + 10 * S, "B", {HOME: 1.80}, fixture="F7")]),
    # F4: a goal, and both bookmakers move 2 s and 3 s after it without suspending
    (T0, quotes(T0, "A", {HOME: 2.00, DRAW: 3.00, AWAY: 4.00}, fixture="F4")),
    (T0, quotes(T0, "B", {HOME: 2.00, DRAW: 3.00, AWAY: 4.00}, fixture="F4")),
    (G4, [ScoreChange(G4, "mm", "F4", home_score=0, away_score=1, live=True)]),
    (G4 + 2 * S, quotes(G4 + 2 * S, "A", {AWAY: 2.50}, fixture="F4")),
    (G4 + 3 * S, quotes(G4 + 3 * S, "B", {AWAY: 2.60}, fixture="F4")),
]


def write_market(url: str, spool: Path) -> str:
    return write_frames(url, spool, sorted(FRAMES, key=lambda frame: frame[0]), "test")


@pytest.fixture
def market(storage_url: str, tmp_path: Path) -> str:
    """The scripted market, on each storage."""
    return write_market(storage_url, tmp_path / "spool")


pg = query


def close(value: float, fraction: Fraction | float, within: float = 1e-12) -> bool:
    return abs(value - float(fraction)) <= within


# -- the screen ----------------------------------------------------------------------------------

BEST = ("SELECT outcome_id, best_price, best_bookmakers, second_price, second_bookmakers, bookmakers"
        " FROM best_prices_as_of(%s) WHERE fixture_id = 'F1' ORDER BY outcome_id")


def test_best_prices_are_the_best_open_price_its_bookmakers_and_the_next_best(market: str) -> None:
    assert pg(market, BEST, T0 + 60 * S) == [
        (HOME, 1.80, ["A"], 1.50, ["B"], 2),
        (DRAW, 4.00, ["A", "B"], None, None, 2),  # a tie: both offer it, nobody offers less
        (AWAY, 4.40, ["B"], 3.50, ["A"], 2)]
    assert pg(market, BEST, KO + S) == []  # both suspended for the kick-off: nothing is open
    assert pg(market, BEST, G + S) == [(HOME, 1.25, ["B"], None, None, 1), (DRAW, 5.00, ["B"], None, None, 1),
                                       (AWAY, 8.00, ["B"], None, None, 1)]  # A suspended since the goal
    assert pg(market, BEST, G + 4 * S) == [(HOME, 1.80, ["A"], 1.25, ["B"], 2), (DRAW, 5.00, ["B"], 4.00, ["A"], 2),
                                           (AWAY, 8.00, ["B"], 3.50, ["A"], 2)]


# -- the market without its margin ----------------------------------------------------------------

FAIR = ("SELECT bookmaker, outcome_id, price, fair_prob, overround, method_parameter FROM fair_prices_as_of(%s, %s)"
        " WHERE fixture_id = %s ORDER BY bookmaker, outcome_id")


def test_multiplicative_fair_prices_are_the_implied_probabilities_in_proportion(market: str) -> None:
    rows = pg(market, FAIR, T0 + 60 * S, "multiplicative", "F1")
    # A: 1/1.8 + 1/4 + 1/3.5 = 5/9 + 1/4 + 2/7 = 275/252; B: 2/3 + 1/4 + 5/22 = 151/132
    expected = {("A", HOME): Fraction(28, 55), ("A", DRAW): Fraction(63, 275), ("A", AWAY): Fraction(72, 275),
                ("B", HOME): Fraction(88, 151), ("B", DRAW): Fraction(33, 151), ("B", AWAY): Fraction(30, 151)}
    assert [(book, outcome) for book, outcome, *_ in rows] == list(expected)
    for book, outcome, _, fair, overround, parameter in rows:
        assert close(fair, expected[book, outcome]), (book, outcome, fair)
        assert close(overround, Fraction(23, 252) if book == "A" else Fraction(19, 132))
        assert parameter is None
    # the default method is the multiplicative one
    assert pg(market, "SELECT count(*) FROM fair_prices_as_of(%s) WHERE fixture_id = 'F1'", T0 + 60 * S) == [(6,)]


def test_a_market_missing_an_outcome_or_suspended_gives_no_row(market: str) -> None:
    # A had not quoted the away win yet, B had: only B's market is complete (5/8, 1/4, 1/4 of 9/8)
    rows = pg(market, FAIR, T0 - 30 * S, "shin", "F1")
    assert [(book, outcome) for book, outcome, *_ in rows] == [("B", HOME), ("B", DRAW), ("B", AWAY)]
    assert pg(market, FAIR, KO + S, "power", "F1") == []  # suspended for the kick-off
    assert [r[:2] for r in pg(market, FAIR, G + 2 * S, "multiplicative", "F1")] == [("B", HOME), ("B", DRAW),
                                                                                    ("B", AWAY)]


@pytest.mark.parametrize("method", ["multiplicative", "power", "shin"])
def test_every_complete_market_sums_to_one(market: str, method: str) -> None:
    sums = pg(market, "SELECT fixture_id, bookmaker, sum(fair_prob), count(*) FROM fair_prices_as_of(%s, %s)"
                      " GROUP BY 1, 2 ORDER BY 1, 2", G + 10 * S, method)
    assert [(fixture, book, n) for fixture, book, _, n in sums] == [
        ("F1", "A", 3), ("F1", "B", 3), ("F2", "X", 3), ("F3", "X", 2), ("F4", "A", 3), ("F4", "B", 3), ("F5", "X", 3),
        ("F6", "P", 2), ("F6", "Q", 2), ("F6", "R", 2), ("F7", "A", 3), ("F7", "B", 3)]
    assert all(abs(total - 1) < 1e-12 for _, _, total, _ in sums)


def test_shin_and_power_give_the_published_answers(market: str) -> None:
    def fair(fixture: str, method: str) -> tuple[list[float], float]:
        rows = pg(market, FAIR, T0 + S, method, fixture)
        return [row[3] for row in rows], rows[0][5]

    probs, z = fair("F2", "shin")  # the `shin` package: [0.37299406033208965, 0.4047794109200184, 0.2222265287474275]
    assert abs(z - 0.01694251276407055) < 1e-11  # its fixed point stops at a step of 1e-12; ours is exact
    assert all(abs(p - q) < 1e-11 for p, q in zip(probs, [0.37299406033208965, 0.4047794109200184, 0.2222265287474275],
                                                   strict=True))
    probs, z = fair("F3", "shin")  # two outcomes: the closed form (Štrumbelj 2014), i.e. the additive method
    assert abs(z - 0.03172728540646625) < 1e-12
    assert all(abs(p - q) < 1e-12 for p, q in zip(probs, [0.6508515815085157, 0.3491484184914841], strict=True))
    assert abs(probs[0] - (1 / 1.5 - (1 / 1.5 + 1 / 2.74 - 1) / 2)) < 1e-12
    probs, z = fair("F5", "shin")  # penaltyblog: z 0.016236442857291165, [0.35934392, 0.42324385, 0.21741223]
    assert abs(z - 0.016236442857291165) < 1e-11
    assert all(abs(p - q) < 1e-8 for p, q in zip(probs, [0.35934392, 0.42324385, 0.21741223], strict=True))
    probs, k = fair("F5", "power")  # penaltyblog: k 1.0309132393169356, [0.3591711, 0.42373075, 0.21709815]
    assert abs(k - 1.0309132393169356) < 1e-11
    assert all(abs(p - q) < 1e-8 for p, q in zip(probs, [0.3591711, 0.42373075, 0.21709815], strict=True))


def test_an_unknown_method_is_an_error_that_names_the_methods(market: str) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="multiplicative, power, shin"):
        pg(market, FAIR, T0, "shinn", "F1")


def test_consensus_is_the_median_fair_probability_and_who_is_off_it(market: str) -> None:
    rows = pg(market, "SELECT outcome_id, consensus_prob, bookmakers, by_bookmaker, deviations"
                      " FROM consensus_as_of(%s, 'multiplicative') WHERE fixture_id = 'F1' ORDER BY outcome_id",
              T0 + 60 * S)
    consensus = {HOME: (Fraction(28, 55) + Fraction(88, 151)) / 2, DRAW: (Fraction(63, 275) + Fraction(33, 151)) / 2,
                 AWAY: (Fraction(72, 275) + Fraction(30, 151)) / 2}
    assert consensus[HOME] == Fraction(4534, 8305)
    assert [row[0] for row in rows] == [HOME, DRAW, AWAY]
    for outcome, prob, books, names, deviations in rows:
        assert close(prob, consensus[outcome]) and books == 2 and names == ["A", "B"]
        own = {HOME: (Fraction(28, 55), Fraction(88, 151)), DRAW: (Fraction(63, 275), Fraction(33, 151)),
               AWAY: (Fraction(72, 275), Fraction(30, 151))}[outcome]
        assert close(deviations[0], own[0] - consensus[outcome]) and close(deviations[1], own[1] - consensus[outcome])
    # three bookmakers: the median is the middle one (Q); R is further from it than P
    rows = pg(market, "SELECT outcome_id, consensus_prob, bookmakers, furthest_bookmaker, furthest_deviation"
                      " FROM consensus_as_of(%s) WHERE fixture_id = 'F6' ORDER BY outcome_id", T0 + S)
    assert [row[0] for row in rows] == ["104", "105"] and all(row[2:4] == (3, "R") for row in rows)
    assert close(rows[0][1], Fraction(19, 37)) and close(rows[0][4], Fraction(19, 36) - Fraction(19, 37))
    assert close(rows[1][1], Fraction(18, 37)) and close(rows[1][4], Fraction(17, 36) - Fraction(18, 37))


# -- steam that follows information, not the scoreboard --------------------------------------------

STEAM = ("SELECT outcome_id, direction, started_at, first_bookmaker, movers, movers_at, after_event"
         " FROM steam_moves(0.05, 2, INTERVAL '30 seconds'{extra}) WHERE fixture_id = %s"
         " ORDER BY started_at, outcome_id")
WINDOWED = "steam_moves(0.05, 2, INTERVAL '30 seconds', event_window => %s)"


def test_steam_after_a_goal_or_a_suspension_is_flagged(market: str) -> None:
    rows = pg(market, STEAM.format(extra=""), "F1")
    assert rows == [
        (HOME, "shortened", T0 + 10 * S, "A", ["A", "B"], [T0 + 10 * S, T0 + 20 * S], False),
        (AWAY, "drifted", T0 + 40 * S, "A", ["A", "B"], [T0 + 40 * S, T0 + 45 * S], False),
        # after the goal: B first, A when it reprices (its stale reopening at G + 3 s moved nothing)
        (HOME, "shortened", G + S, "B", ["B", "A"], [G + S, G + 6 * S], True),
        (DRAW, "drifted", G + S, "B", ["B", "A"], [G + S, G + 6 * S], True),
        (AWAY, "drifted", G + S, "B", ["B", "A"], [G + S, G + 6 * S], True),
    ]
    # B's moves came 1 s after the goal and 0.5 s after A suspended: a window of 0.7 s still sees the
    # suspension, one of 0.2 s sees neither
    flags = f"SELECT after_event FROM {WINDOWED} WHERE fixture_id = 'F1' AND started_at = %s"
    assert pg(market, flags, timedelta(seconds=0.7), G + S) == [(True,)] * 3
    assert pg(market, flags, timedelta(seconds=0.2), G + S) == [(False,)] * 3
    # F4: no suspension, only the goal 2 s before
    f4 = f"SELECT first_bookmaker, after_event FROM {WINDOWED} WHERE fixture_id = 'F4'"
    assert pg(market, f4, timedelta(seconds=5)) == [("A", True)]
    assert pg(market, f4, timedelta(seconds=1)) == [("A", False)]


def test_one_frame_moving_two_bookmakers_starts_one_episode(market: str) -> None:
    rows = pg(market, "SELECT started_at, first_bookmaker, movers FROM steam_moves(0.05, 2, INTERVAL '30 seconds')"
                      " WHERE fixture_id = 'F7'")
    assert rows == [(T0 + 10 * S, "A", ["A", "B"])]  # 0007's gave two: one first mover each, the same movers


def test_steam_keeps_its_three_parameter_call_and_takes_a_window(market: str) -> None:
    before_kickoff = pg(market, "SELECT started_at FROM steam_moves(0.05, 2, INTERVAL '30 seconds', %s, %s)"
                                " WHERE fixture_id = 'F1' ORDER BY started_at", T0 - 60 * S, KO)
    assert before_kickoff == [(T0 + 10 * S,), (T0 + 40 * S,)]
    # a move needs the price before it inside the window: from T0 + 5 s, no move before kick-off has one
    assert pg(market, "SELECT count(*) FROM steam_moves(0.05, 2, INTERVAL '30 seconds', %s, %s)"
                      " WHERE fixture_id = 'F1'", T0 + 5 * S, KO) == [(0,)]
    assert pg(market, "SELECT count(*) FROM steam_moves(0.05, 2, INTERVAL '30 seconds')"
                      " WHERE fixture_id = 'F1' AND NOT after_event") == [(2,)]


# -- who leads --------------------------------------------------------------------------------------

LEAD = ("SELECT leader, follower, moves, follows, follow_rate, median_delay"
        " FROM lead_lag(0.05, INTERVAL '30 seconds'{extra}) ORDER BY leader, follower")


def test_lead_lag_says_who_moves_first_and_who_copies(market: str) -> None:
    before_kickoff = pg(market, LEAD.format(extra=", %s, %s"), T0 - 60 * S, KO)
    # F1: A moved first twice, B followed 10 s and 5 s later; F7: one frame moved both (no reply)
    assert before_kickoff == [("A", "B", 3, 2, 2 / 3, 7.5 * S), ("B", "A", 3, 0, 0.0, None)]
    # the whole day: after the goal B moved first (A copied 5 s later on all three outcomes); on F4 A led by
    # 1 s; on F7 both moved in one frame, which is no reply
    assert pg(market, LEAD.format(extra="")) == [("A", "B", 7, 3, 3 / 7, 5 * S), ("B", "A", 7, 3, 3 / 7, 5 * S)]
    assert pg(market, LEAD.format(extra=", fixture => 'F4'")) == [("A", "B", 1, 1, 1.0, S), ("B", "A", 1, 0, 0.0, None)]


# -- free money ----------------------------------------------------------------------------------------

ARB = ("SELECT fixture_id, market_id, started_at, ended_at, duration, edge, max_edge, outcome_ids, prices, bookmakers"
       " FROM arbitrage_windows(%s{extra}) ORDER BY started_at")


def test_an_arbitrage_window_opens_when_a_stale_bookmaker_reopens_after_a_goal(market: str) -> None:
    rows = pg(market, ARB.format(extra=""), 0.0)
    assert len(rows) == 1
    fixture, market_id, started, ended, duration, edge, max_edge, outcomes, prices, books = rows[0]
    assert (fixture, market_id, started, ended, duration) == ("F1", "101", G + 3 * S, G + 6 * S, 3 * S)
    assert close(edge, Fraction(43, 360)) and close(max_edge, Fraction(43, 360))  # 1 - (5/9 + 1/5 + 1/8)
    assert (outcomes, prices, books) == ([HOME, DRAW, AWAY], [1.80, 5.00, 8.00], ["A", "B", "B"])
    assert pg(market, ARB.format(extra=""), 0.12) == []  # the edge is 11.9 %
    assert len(pg(market, ARB.format(extra=""), 0.11)) == 1
    # best prices summing to exactly 1 (at T0: 1/2 + 1/4 + 1/4) are not free money
    assert pg(market, ARB.format(extra=", %s, %s"), 0.0, T0 - 60 * S, KO) == []
    # a window that ends inside it: still open at its end
    assert [r[2:5] for r in pg(market, ARB.format(extra=", %s, %s"), 0.0, G, G + 5 * S)] == [(G + 3 * S, None, None)]


# -- did the desk beat the close? ---------------------------------------------------------------------

CLV = ("SELECT kind, bet_id, order_id, bookmaker, fixture_id, outcome_id, taken_at, taken_price, in_play, closing_at,"
       " closing_price, clv_pct, clv_prob, fair_closing_prob, fair_clv_pct, fair_clv_prob, consensus_bookmakers"
       " FROM closing_line_value ORDER BY kind, bet_id, order_id")


def test_closing_line_value_of_bets_and_filled_orders(market: str) -> None:
    rows = {(row[0], row[1] or row[2]): row for row in pg(market, CLV)}
    assert list(rows) == [("bet", "11"), ("bet", "12"), ("bet", "13"), ("order", "O1"), ("order", "O2"),
                          ("order", "O3")]
    fair = Fraction(4534, 8305)  # the mean of A's 28/55 and B's 88/151 (the closing lines of 101)
    b11 = rows["bet", "11"]
    assert b11[:11] == ("bet", "11", "O1", "A", "F1", HOME, T0 + 6 * S, 2.0, False, KO, 1.80)
    assert close(b11[11], Fraction(1, 9)) and close(b11[12], Fraction(1, 18))  # 2.00 / 1.80 - 1; 1/1.8 - 1/2
    assert close(b11[13], fair) and close(b11[14], 2 * fair - 1) and close(b11[15], fair - Fraction(1, 2))
    assert b11[16] == 2
    o1 = rows["order", "O1"]  # orderCents 0.5: 2.00 taken at polymarket, which no feed prices
    assert o1[:11] == ("order", None, "O1", "polymarket", "F1", HOME, T0 + 5 * S, 2.0, False, KO, None)
    assert o1[11] is None and o1[12] is None and close(o1[13], fair) and close(o1[14], 2 * fair - 1)
    for key in (("bet", "12"), ("order", "O2")):  # in play: no closing line to beat
        assert rows[key][8] is True and rows[key][9:] == (None,) * 8
    for key in (("bet", "13"), ("order", "O3")):  # no start time known: no closing line yet
        assert rows[key][4] == "F9" and rows[key][8] is None and rows[key][9:] == (None,) * 8


# -- the chart -------------------------------------------------------------------------------------------

def test_the_chart_draws_the_consensus_and_shades_the_arbitrage_windows(db_url: str, tmp_path: Path) -> None:
    url = write_market(db_url, tmp_path / "spool")
    chart = plot.chart_data(Engine.warehouse(url), "F1", "101", consensus="multiplicative", arbitrage=0.0)
    assert [(began, ended) for began, ended, _ in chart.arbitrage] == [(G + 3 * S, G + 6 * S)]
    assert close(chart.arbitrage[0][2], Fraction(43, 360))
    home = chart.selections[0]
    times, fair = home.consensus
    assert len(times) == plot.CONSENSUS_SAMPLES and times[0] == chart.start and times[-1] == chart.end
    settled = [value for at, value in zip(times, fair, strict=True) if T0 + 46 * S <= at < KO]
    assert settled and all(close(value, 100 * Fraction(4534, 8305), 1e-9) for value in settled)
    figure = plot.draw(chart)
    for axis in figure.axes:
        shaded = [patch for patch in axis.patches if patch.get_gid() == "arbitrage"]
        assert [(mdates.num2date(p.get_x()), mdates.num2date(p.get_x() + p.get_width())) for p in shaded] == [
            (G + 3 * S, G + 6 * S)]
        assert len([line for line in axis.lines if line.get_gid() == "consensus"]) == 1
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "consensus fair (multiplicative)" in legend and "arbitrage (edge > 0 %)" in legend
    with pytest.raises(ValueError, match="use one of multiplicative, power, shin"):
        plot.chart_data(Engine.warehouse(url), "F1", "101", consensus="fair")


# -- the same rows on the query surface ------------------------------------------------------------------

SURFACE = [
    f"SELECT * FROM best_prices_as_of(TIMESTAMPTZ '{G + 4 * S}') ORDER BY fixture_id, outcome_id",
    *[f"SELECT * FROM fair_prices_as_of(TIMESTAMPTZ '{T0 + 60 * S}', '{m}') ORDER BY fixture_id, bookmaker, outcome_id"
      for m in ("multiplicative", "power", "shin")],
    f"SELECT * FROM consensus_as_of(TIMESTAMPTZ '{T0 + 60 * S}', 'shin') ORDER BY fixture_id, outcome_id",
    "SELECT * FROM steam_moves(0.05, 2, INTERVAL '30 seconds') ORDER BY fixture_id, started_at, outcome_id",
    f"SELECT * FROM steam_moves(0.05, 2, INTERVAL '30 seconds', TIMESTAMPTZ '{T0 - 60 * S}', TIMESTAMPTZ '{KO}',"
    " INTERVAL '1 second') ORDER BY fixture_id, started_at, outcome_id",
    "SELECT * FROM lead_lag(0.05, INTERVAL '30 seconds') ORDER BY leader, follower",
    "SELECT * FROM arbitrage_windows(0.0) ORDER BY started_at",
    "SELECT * FROM closing_line_value ORDER BY kind, bet_id, order_id",
    "SELECT * FROM observed_quotes ORDER BY received_at, raw_id, fixture_id, bookmaker, outcome_id",
]


def test_the_query_surface_answers_row_for_row_like_postgresql(market: str) -> None:
    con = analysis.connect(market)
    for sql in SURFACE:
        expected = [comparable(row) for row in pg(market, sql)]
        assert expected, f"the scripted market must give rows for {sql}"
        assert [comparable(row) for row in con.execute(sql).fetchall()] == expected, sql


def test_the_reader_role_can_use_every_new_relation(market: str) -> None:
    with psycopg.connect(market, autocommit=True) as conn:
        conn.execute("SET ROLE warehouse_reader")
        for sql in SURFACE:
            assert conn.execute(f"SELECT count(*) FROM ({sql}) AS q").fetchone()[0] > 0, sql
