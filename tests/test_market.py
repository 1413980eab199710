"""The simulated market: runs of their own, reproducible seeds, and matches that look like football.

The market's clock is a parameter: these tests drive it by hand, so hours of matches take seconds
and nothing depends on how fast the machine is.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest

from warehouse.simulate.ckex import CkexSimulator, fleet_subscriptions
from warehouse.simulate.market import (
    BOOKMAKERS,
    OUTCOMES,
    STALE_AFTER_GOAL_S,
    Fixture,
    Market,
    PriceChange,
    ScoreUpdate,
)
from warehouse.simulate.mm import CHANNELS, MmSimulator
from warehouse.simulate.oddspapi import OddsPapiSimulator
from warehouse.simulate.saba import SabaSimulator

T0 = 1_790_000_000.0
HOME, DRAW, AWAY = OUTCOMES


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def changes(market: Market, clock: Clock, count: int, dt: float) -> Iterator[PriceChange | ScoreUpdate]:
    """`count` steps, `dt` apart (a change's fixture is read before the next step changes it)."""
    for _ in range(count):
        clock.now += dt
        yield market.step()


def finished_matches(seed: int, matches: int) -> list[Fixture]:
    """Fixtures played to full time, one minute of match a step."""
    clock = Clock()
    market = Market(seed=seed, match_s=90, kickoff_in_s=10, clock=clock)
    done: dict[str, Fixture] = {}
    while len(done) < matches:
        clock.now += 0.25
        change = market.step()
        if isinstance(change, ScoreUpdate) and change.fixture.status_id == 2:
            done[change.fixture.fixture_id] = change.fixture
    return list(done.values())


def test_every_run_has_fixtures_of_its_own() -> None:
    """Demo runs used to share fixture ids (seed 1): a second run's prices piled onto the first's."""
    first, second = Market(seed=1, clock=Clock(T0)), Market(seed=1, clock=Clock(T0 + 40))
    assert not {f.fixture_id for f in first.fixtures} & {f.fixture_id for f in second.fixtures}
    assert not {f.event_id for f in first.fixtures} & {f.event_id for f in second.fixtures}
    assert all(f.fixture_id.startswith("id") and len(f.fixture_id) == 18 for f in first.fixtures)
    # The ids come from `run`: the same run (and seed) gives the same ids.
    again = Market(seed=1, run=first.run, clock=Clock(T0 + 40))
    assert [f.fixture_id for f in again.fixtures] == [f.fixture_id for f in first.fixtures]


def test_the_same_seed_gives_the_same_changes() -> None:
    def run(seed: int) -> list[tuple]:
        clock = Clock()
        market = Market(seed=seed, match_s=30, kickoff_in_s=5, run=7, clock=clock)
        return [(type(c).__name__, c.fixture.fixture_id, c.fixture.home_score, c.fixture.away_score,
                 getattr(c, "bookmaker", None), getattr(c, "prices", None), getattr(c, "active", None))
                for c in changes(market, clock, 6000, 0.01)]

    once = run(11)
    assert once == run(11)
    assert once != run(12)
    assert {kind for kind, *_ in once} == {"PriceChange", "ScoreUpdate"}


def test_matches_score_like_football() -> None:
    """0-5 goals, a home advantage, draws about a quarter of the time."""
    matches = finished_matches(seed=5, matches=300)
    goals = [f.home_score + f.away_score for f in matches]
    assert max(goals) <= 5 and 2.0 <= statistics.mean(goals) <= 3.0
    assert Counter(goals)[0] > 0 and Counter(goals)[5] > 0
    results = Counter("home" if f.home_score > f.away_score else "away" if f.away_score > f.home_score else "draw"
                      for f in matches)
    assert results["home"] > 1.15 * results["away"]
    assert 0.18 <= results["draw"] / len(matches) <= 0.34


def test_prices_move_as_a_match_goes() -> None:
    """Pre-match prices in a realistic range; level late on, the draw is the favourite; a price of
    1.01 only when the result is nearly certain: late, or a side well ahead."""
    clock = Clock()
    market = Market(seed=3, match_s=90, kickoff_in_s=10, clock=clock)
    pre, level_late, certain = [], [], []
    for change in changes(market, clock, 40_000, 0.05):  # each step, 3 s of match
        if not isinstance(change, PriceChange) or not change.active:
            continue
        fixture, prices = change.fixture, change.prices
        lead = abs(fixture.home_score - fixture.away_score)
        if fixture.status_id == 0:
            pre.append(prices)
        elif fixture.minute >= 82 and lead == 0 and change.bookmaker not in STALE_AFTER_GOAL_S:
            level_late.append(prices)  # (a stale bookmaker may still show the lead an equaliser ended)
        if min(prices.values()) == 1.01:
            certain.append((fixture.minute, lead))
    assert pre and level_late and certain
    assert all(1.1 <= p <= 30 for prices in pre for p in prices.values())
    assert statistics.median(p[HOME] for p in pre) < statistics.median(p[AWAY] for p in pre)  # home advantage
    assert all(p[DRAW] < min(p[HOME], p[AWAY]) for p in level_late)
    assert all(minute >= 75 or lead >= 2 for minute, lead in certain)


def test_bookmakers_keep_their_own_margins() -> None:
    clock = Clock()
    market = Market(seed=4, clock=clock)
    fixture = market.fixtures[0]  # pre-match
    for book in BOOKMAKERS:
        overround = statistics.mean(sum(1 / p for p in market.quote(fixture, book, T0 + s).values()) - 1
                                    for s in range(0, 100, 5))
        low, high = (0.005, 0.025) if book.endswith("-ex") else (0.025, 0.075)
        assert low <= overround <= high, (book, overround)


def test_steam_shows_at_one_bookmaker_first_then_the_others_within_seconds() -> None:
    clock = Clock()
    market = Market(seed=8, clock=clock)
    fixture = market.fixtures[0]
    script = fixture.script
    assert script is not None
    steam = next(s for s in script.steams if s.at < fixture.start_ts)
    outcome = HOME if steam.shift > 0 else AWAY  # the side the money is on shortens

    def price(book: str, at: float) -> float:
        return market.quote(fixture, book, at)[outcome]

    before = {book: price(book, steam.at - 0.01) for book in BOOKMAKERS}
    assert price(steam.leader, steam.at + 0.01) <= 0.97 * before[steam.leader]  # 3 % or more
    assert all(price(book, steam.at + 0.01) >= 0.99 * before[book] for book in BOOKMAKERS if book != steam.leader)
    assert all(price(book, steam.at + 2.5) <= 0.97 * before[book] for book in BOOKMAKERS)


def test_markets_suspend_at_a_goal_and_reopen_repriced() -> None:
    clock = Clock()
    market = Market(seed=2, match_s=600, kickoff_in_s=10, fixtures_count=1, clock=clock)
    fixture = market.fixtures[0]
    script = fixture.script
    assert script is not None and script.goal_times, "seed 2's first match has goals"
    goal, home = script.goal_times[0], script.goal_home[0]
    scorer = HOME if home else AWAY
    for book in BOOKMAKERS:
        assert market.is_open(fixture, book, goal - 0.5)
        assert not market.is_open(fixture, book, goal + 0.01)
        assert not market.is_open(fixture, book, goal + market.suspend_s - 0.01)
        assert market.quote(fixture, book, goal + 0.5) == market.quote(fixture, book, goal - 0.001)
    reopened = {book: goal + market.suspend_s + market._book(book)[1] + 0.01 for book in BOOKMAKERS}
    assert reopened["pinnacle"] < reopened["starcasino.be"]  # the sharp book re-prices first
    for book, at in reopened.items():
        assert market.is_open(fixture, book, at)
        before = market.quote(fixture, book, goal - 0.001)
        if book == "starcasino.be":  # the slow one reopens on its old prices, and re-prices 2 s later
            assert market.quote(fixture, book, at) == before
            at += 2.0
        assert market.quote(fixture, book, at)[scorer] < 0.8 * before[scorer]
    # Its stale price beside the others' new ones: the best prices add up to less than 100 %.
    stale_at = reopened["starcasino.be"] + 0.5
    best = {o: max(market.quote(fixture, book, stale_at)[o] for book in BOOKMAKERS) for o in (HOME, DRAW, AWAY)}
    assert sum(1 / price for price in best.values()) < 1
    # The goal is news once, with the score, when the market reaches it.
    clock.now = fixture.start_ts
    assert [c for c in changes(market, clock, 20, 0.001) if isinstance(c, ScoreUpdate)]  # kick-off
    clock.now = goal
    news = [c for c in changes(market, clock, 20, 0.001) if isinstance(c, ScoreUpdate)]
    assert len(news) == 1 and (fixture.home_score, fixture.away_score) == ((1, 0) if home else (0, 1))


def suspended(messages: list[dict]) -> set[str]:
    """Bookmakers whose 1X2 prices in these OddsPapi messages are all not open for bets."""
    books: dict[str, bool] = {}
    for message in messages:
        for book, odds in message.get("bookmakerOdds", {}).items():
            for outcome in odds.get("markets", {}).get("101", {}).get("outcomes", {}).values():
                books[book] = books.get(book, True) and not outcome["players"]["0"]["active"]
    return {book for book, closed in books.items() if closed}


def test_feeds_report_every_goal_whichever_feed_stepped_onto_it() -> None:
    """Each feed's step takes the next change of one shared market: a goal found by the exchange
    feed's step must still reach the OddsPapi feed, with that fixture's next change, and suspend
    every bookmaker's market there at once (a line must not run on through a goal)."""
    clock = Clock()
    market = Market(seed=6, match_s=60, kickoff_in_s=5, clock=clock)
    papi, mm = OddsPapiSimulator("k", market=market, record=False), MmSimulator({}, market=market)
    reported: dict[str, list[tuple[int, int]]] = {}
    scores: dict[str, list[tuple[int, int]]] = {}
    suspended_with_the_news = []
    for n in range(40_000):
        clock.now += 0.005
        if n % 4:  # the exchange feed takes three changes in four
            mm._next(list(CHANNELS))
        else:
            messages = [orjson.loads(frame) for frame in papi.render(market.step())]
            for message in messages:
                if "scores" in message:
                    score = message["scores"]["periods"]["0"]
                    path = reported.setdefault(message["fixtureId"], [])
                    score = (score["participant1Score"], score["participant2Score"])
                    if path and path[-1] != score:  # a goal: every bookmaker's market suspended with it
                        suspended_with_the_news.append(suspended(messages))
                    path.append(score)
        for fixture in market.fixtures:
            path = scores.setdefault(fixture.fixture_id, [])
            if (fixture.home_score, fixture.away_score) not in path:
                path.append((fixture.home_score, fixture.away_score))
    played = {fid: path for fid, path in scores.items() if path[0] == (0, 0) and len(path) > 1}
    goals = sum(len(path) - 1 for path in played.values())
    assert len(played) >= 8 and goals >= 15
    # Every score in order, and the last one always: two goals between two of the fixture's
    # OddsPapi changes would show as one jump (none here: each fixture changes a dozen times a second).
    assert all(list(dict.fromkeys(reported[fid])) == path for fid, path in played.items())
    assert len(suspended_with_the_news) >= goals and all(books == set(BOOKMAKERS) for books in suspended_with_the_news)


def test_a_market_running_for_days_stays_bounded() -> None:
    """Three days at the default pace: matches end and new fixtures replace them, and neither the
    market nor the simulators rendering it keep more than the current fixtures' state."""
    clock = Clock()
    market = Market(seed=5, clock=clock)
    papi, saba = OddsPapiSimulator("k", market=market, record=False), SabaSimulator(market=market, record=False)
    seen: set[str] = set()
    for n in range(3 * 86_400 // 16):
        clock.now += 16
        change = market.step()
        seen.add(change.fixture.fixture_id)
        papi.render(change) if n % 2 else saba._delta(change)
        if isinstance(change, PriceChange):
            assert all(1.01 <= p <= 1001.0 for p in change.prices.values())
    assert len(seen) > 1000 and len(market.fixtures) == 4
    assert len(papi._announced) <= 4 * (1 + len(BOOKMAKERS)) and len(papi._scores) <= 4
    assert len(saba.events) == len(saba.markets) == 4
    assert {f.event_id for f in market.fixtures} == set(saba.events)
    assert all(len(f.script.books) <= len(BOOKMAKERS) + 1 for f in market.fixtures if f.script)


def test_the_fleets_ckex_subscriptions_name_this_runs_fixtures_and_keep_their_place() -> None:
    clock = Clock()
    market = Market(seed=1, match_s=30, kickoff_in_s=5, clock=clock)
    ckex = CkexSimulator("t", market=market)
    first, second = market.fixtures[0], market.fixtures[1]
    chloe, fancy = (s.split("#", 1)[1].partition("@") for s in fleet_subscriptions(market))
    assert (chloe[0], fancy[0]) == (f"{first.event_id}-e", f"{second.event_id}-e")
    assert ckex._fixture(chloe[0], chloe[2]) is first and ckex._fixture(fancy[0], fancy[2]) is second
    clock.now += 60  # both matches over: new ones in their places
    market.step()
    assert ckex._fixture(chloe[0], chloe[2]) is market.fixtures[0] is not first
    assert ckex._fixture("40789105-e", "219_33753655") in market.fixtures  # a config's own: some match


@pytest.mark.parametrize("match_s", [0, -5])
def test_a_match_must_last_some_time(match_s: float) -> None:
    with pytest.raises(ValueError, match="a match must last"):
        Market(match_s=match_s)
