"""A seeded model of football matches that every simulator renders in its own protocol.

A fixture is one match whose script is drawn from the seed when it appears: the teams' scoring
rates (with home advantage), its goals (0-5, each with a minute and a team), the market's pre-match
drift and its steam moves. The true 1X2 probabilities at any moment follow from the score and the
goals still expected in the time left (two Poisson counts), so prices drift before kick-off, jump
at goals, the draw shortens as time runs out with the score level, and a result is priced at 1.0x
only when it is nearly certain, near the end. Time is compressed: 90 minutes last `match_s` wall
seconds and kick-off comes `kickoff_in_s` after a fixture appears. A finished fixture is replaced
by a new one, so a simulator runs for days on state of a bounded size.

Every bookmaker quotes the match with its own margin, its own small opinion and its own reaction
time: a steam move shows at one bookmaker first and at the others within seconds; at kick-off and
at a goal every bookmaker suspends, then re-prices after its own delay — except a slow one, which
reopens after a goal on the prices it had before it and re-prices a moment later: a short window
in which its stale price and the others' new ones add up to less than 100 % (an arbitrage).

Determinism: the seed fixes every match and the order in which step() picks fixtures and
bookmakers; prices are a function of the clock, so with the same clock readings the same seed
gives the same changes. Fixture ids are made from `run` (by default the clock when the market is
made), so every run has fixtures of its own and two runs never write to the same fixture.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from warehouse.feeds.oddspapi import MARKET_1X2, OUTCOME_NAMES

BOOKMAKERS = ("pinnacle", "bet365", "stake", "22bet", "starcasino.be", "betfair-ex")
OUTCOMES = tuple(OUTCOME_NAMES[MARKET_1X2])  # OddsPapi 1X2 full time: home, draw, away
MINUTES = 90
TEAMS = ("Partizan", "Buducnost", "Ajax", "Benfica", "Celtic", "Rangers", "Lazio", "Sevilla", "Porto", "Braga",
         "Malmo", "Brondby", "Feyenoord", "Anderlecht", "Galatasaray", "Olympiacos", "Sparta Praha", "Dinamo Zagreb",
         "Salzburg", "Basel", "Rosenborg", "Legia", "Ferencvaros", "Shakhtar")

# Reaction time (wall seconds at full pace) of the bookmakers we know: the sharp ones move first.
# Other names (a feed quoting as one bookmaker, e.g. "saba") get one drawn from their name.
_REACTION_S = {"pinnacle": 0.0, "betfair-ex": 0.1, "stake": 0.3, "bet365": 0.45, "22bet": 0.6, "starcasino.be": 0.8}
# Reopens after a goal on its pre-goal prices, and keeps them this much longer (wall seconds at full pace).
STALE_AFTER_GOAL_S = {"starcasino.be": 2.0}
_MIN_PRICE, _MAX_PRICE = 1.01, 1001.0  # no bookmaker quotes a price without payout
_DRAW_FACTOR = 1.1  # independent Poisson scores underrate draws by about this much
_MAX_GOALS = 5
_TERMS = 16  # Poisson terms: more goals than this in what is left of a match is negligible
_NEGLIGIBLE = 1e-7  # a probability that moves no price (the longest is 1001)
_PRE_POINTS, _IN_POINTS = 12, 45  # points of the drift path before and after kick-off
# Exchange ladder (Betfair's increments) and the coarser one bookmakers quote on: (up to, step).
_EXCHANGE_LADDER = ((2.0, 0.01), (3.0, 0.02), (4.0, 0.05), (6.0, 0.1), (10.0, 0.2), (20.0, 0.5), (30.0, 1.0),
                    (50.0, 2.0), (100.0, 5.0), (1000.0, 10.0))
_BOOK_LADDER = ((5.0, 0.01), (10.0, 0.05), (20.0, 0.25), (50.0, 1.0), (_MAX_PRICE, 5.0))


@dataclass
class Steam:
    """Sharp money: the line shifts by `shift` (home-over-away log goal rate) at one bookmaker, then the others."""

    at: float  # wall time the leader moves
    shift: float
    leader: str


@dataclass
class Script:
    """What will happen in one match, drawn when its fixture appears."""

    home_rate: float  # goals expected over 90 minutes
    away_rate: float
    goal_times: list[float]  # wall times, in order
    goal_home: list[bool]  # who scored each
    drift_at: list[float]  # wall times of the points of the market's drift path
    drift: list[float]  # the market's view of supremacy at those points (added to log home/away rate)
    steams: list[Steam]
    seed: str  # of the bookmakers' own opinions, drawn when a bookmaker first quotes the match
    next_goal: int = 0  # goals reported so far
    books: dict[str, Opinion] = field(default_factory=dict)


@dataclass
class Opinion:
    """One bookmaker's view of one match: small, steady or slowly moving differences from the market."""

    bias: float  # supremacy
    draw: float  # log factor on the draw
    walk: list[float]  # slow noise on the drift path's points
    lags: list[float]  # behind each steam move (0 for its leader)


@dataclass
class Fixture:
    index: int  # its place in Market.fixtures
    fixture_id: str  # OddsPapi/MM style, e.g. "id1000000861624412"
    event_id: int  # Saba style integer id
    home: str
    away: str
    home_score: int = 0
    away_score: int = 0
    minute: int = 0
    status_id: int = 0  # 0 not started, 1 live, 2 finished
    start_ts: float = 0.0  # kick-off, Unix seconds
    end_ts: float = 0.0  # full time
    home_id: int = 0
    away_id: int = 0
    script: Script | None = field(default=None, repr=False)


@dataclass
class PriceChange:
    fixture: Fixture
    bookmaker: str
    prices: dict[str, float]  # outcome → decimal price
    active: bool


@dataclass
class ScoreUpdate:
    """Kick-off (0-0), a goal, or full time (status 2): the fixture's state has changed."""

    fixture: Fixture


@dataclass
class Market:
    seed: int = 1
    fixtures_count: int = 4
    bookmakers: tuple[str, ...] = BOOKMAKERS
    match_s: float = 600.0  # wall seconds for 90 minutes
    kickoff_in_s: float = 120.0  # pre-match time of a new fixture
    run: int | None = None  # makes the fixture ids (< 10**9); default: the clock, so every run has its own
    clock: Callable[[], float] = time.time
    fixtures: list[Fixture] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.match_s > 0 or not self.kickoff_in_s >= 0:
            raise ValueError(f"a match must last some time (match_s {self.match_s}, kickoff_in_s {self.kickoff_in_s})")
        self.rng = random.Random(self.seed)
        now = self.clock()
        if self.run is None:
            self.run = int(now * 1000) % 10**9  # ms: two runs share ids only if they start in the same ms
        # Wall-clock latencies shrink with the match, so a match compressed into seconds keeps its
        # order of events (a one-second lag would be four minutes of a 24-second match).
        self.pace = min(1.0, self.match_s / 60)
        self.suspend_s = max(0.75 * self.match_s / MINUTES, 2.0 * self.pace)
        self.settle_s = max(self.suspend_s, 0.05 * self.match_s)  # a finished match stays this long
        self._serial = 0
        self._books: dict[str, tuple[float, float]] = {}
        cycle = self.kickoff_in_s + self.match_s + self.settle_s
        for index in range(self.fixtures_count):
            # Staggered: the first fixture is new (pre-match), the others are further into their match.
            self.fixtures.append(self._new_fixture(index, now - cycle * index / self.fixtures_count, now))

    # -- the market's changes ----------------------------------------------------------------------

    def step(self) -> PriceChange | ScoreUpdate:
        """The next change somewhere in the market."""
        now = self.clock()
        for index, fixture in enumerate(self.fixtures):
            if now >= fixture.end_ts + self.settle_s:
                self.fixtures[index] = self._new_fixture(index, now, now)
        fixture = self.rng.choice(self.fixtures)
        if self._happened(fixture, now):
            return ScoreUpdate(fixture)
        bookmaker = self.rng.choice(self.bookmakers)
        return PriceChange(fixture, bookmaker, self.quote(fixture, bookmaker, now),
                           active=self.is_open(fixture, bookmaker, now))

    def quote(self, fixture: Fixture, bookmaker: str, at: float | None = None) -> dict[str, float]:
        """The bookmaker's prices at `at` (default: now): the match as it saw it its reaction time ago
        (while suspended, and for a stale bookmaker a while after it reopens: as it was before the
        goal), with its opinion and its margin."""
        now = self.clock() if at is None else at
        margin, reaction = self._book(bookmaker)
        seen = now - reaction
        moment = self._last_moment(fixture, now)
        if moment is not None and now < moment + self.suspend_s + reaction + self._stale_s(fixture, bookmaker, moment):
            seen = min(seen, moment - 1e-6)
        probabilities = self._probabilities(fixture, self._opinion(fixture, bookmaker), seen, now)
        ladder = _EXCHANGE_LADDER if bookmaker.endswith("-ex") else _BOOK_LADDER
        return {outcome: _price(q, ladder) for outcome, q in zip(OUTCOMES, _with_margin(probabilities, margin),
                                                                 strict=True)}

    def probabilities(self, fixture: Fixture, at: float | None = None) -> list[float]:
        """The true home/draw/away probabilities at `at` (default: now), before any bookmaker's view."""
        now = self.clock() if at is None else at
        return self._probabilities(fixture, None, now, now)

    def is_open(self, fixture: Fixture, bookmaker: str, at: float | None = None) -> bool:
        """Whether the bookmaker takes bets on the match: not after full time, nor from kick-off or a
        goal until the market is re-priced (`suspend_s`, then the bookmaker's reaction time)."""
        now = self.clock() if at is None else at
        if now >= fixture.end_ts:
            return False
        moment = self._last_moment(fixture, now)
        return moment is None or now >= moment + self.suspend_s + self._book(bookmaker)[1]

    # -- the match ---------------------------------------------------------------------------------

    def _happened(self, fixture: Fixture, now: float) -> bool:
        """Report what is due (kick-off, the next goal, full time), one thing per step, in order."""
        script = fixture.script
        assert script is not None
        if fixture.status_id == 0:
            if now < fixture.start_ts:
                return False
            fixture.status_id, fixture.minute = 1, 0  # kick-off: reported with the (0-0) score
            return True
        if fixture.status_id != 1:
            return False
        if script.next_goal < len(script.goal_times) and script.goal_times[script.next_goal] <= now:
            self._score(fixture, script.next_goal)
            return True
        if now >= fixture.end_ts:
            fixture.status_id, fixture.minute = 2, MINUTES
            return True
        fixture.minute = self._minute(fixture, now)
        return False

    def _score(self, fixture: Fixture, goal: int) -> None:
        script = fixture.script
        assert script is not None
        if script.goal_home[goal]:
            fixture.home_score += 1
        else:
            fixture.away_score += 1
        script.next_goal = goal + 1
        fixture.minute = self._minute(fixture, script.goal_times[goal])

    def _minute(self, fixture: Fixture, at: float) -> int:
        return min(MINUTES, max(0, int((at - fixture.start_ts) / self.match_s * MINUTES)))

    def _stale_s(self, fixture: Fixture, bookmaker: str, moment: float) -> float:
        """How long after reopening the bookmaker still quotes what it saw before `moment` (goals only)."""
        if moment == fixture.start_ts and not (fixture.script and moment in fixture.script.goal_times):
            return 0.0
        return STALE_AFTER_GOAL_S.get(bookmaker, 0.0) * self.pace

    def _last_moment(self, fixture: Fixture, now: float) -> float | None:
        """The latest kick-off or goal at or before `now`: markets suspend at each."""
        script = fixture.script
        assert script is not None
        goals = bisect.bisect_right(script.goal_times, now)
        if goals:
            return script.goal_times[goals - 1]
        return fixture.start_ts if now >= fixture.start_ts else None

    def _probabilities(self, fixture: Fixture, opinion: Opinion | None, seen: float, now: float) -> list[float]:
        """Home/draw/away as the market (or a bookmaker's `opinion`) saw the match at `seen`; steam
        moves reach a bookmaker at `now`, each after its own lag."""
        script = fixture.script
        assert script is not None
        seen = min(seen, fixture.end_ts)
        supremacy = _interpolate(script.drift_at, script.drift, seen)
        draw = 0.0
        if opinion is None:
            supremacy += sum(steam.shift for steam in script.steams if now >= steam.at)
        else:
            supremacy += opinion.bias + _interpolate(script.drift_at, opinion.walk, seen)
            supremacy += sum(steam.shift for steam, lag in zip(script.steams, opinion.lags, strict=True)
                             if now >= steam.at + lag)
            draw = opinion.draw
        goals = bisect.bisect_right(script.goal_times, seen)
        home_goals = sum(script.goal_home[:goals])
        left = (fixture.end_ts - max(seen, fixture.start_ts)) / self.match_s
        home_win, level, away_win = result_probabilities(
            2 * home_goals - goals, script.home_rate * math.exp(supremacy / 2) * left,
            script.away_rate * math.exp(-supremacy / 2) * left, math.exp(draw))
        return [home_win, level, away_win]

    # -- fixtures and bookmakers -------------------------------------------------------------------

    def _new_fixture(self, index: int, appears: float, now: float) -> Fixture:
        """A match drawn from the seed and its serial number, appearing at `appears` (the first
        fixtures of a market appeared in the past: what happened before `now` has happened)."""
        serial = self._serial
        self._serial += 1
        rng = random.Random(f"{self.seed}/{serial}")
        home_team, away_team = rng.sample(range(len(TEAMS)), 2)
        total, supremacy = rng.uniform(2.2, 3.1), rng.gauss(0.35, 0.5)  # home advantage: a third of a goal
        home_rate, away_rate = max(0.25, (total + supremacy) / 2), max(0.25, (total - supremacy) / 2)
        start = float(math.ceil(appears + self.kickoff_in_s))  # on the second, as kick-offs are on the minute
        goals = _goals(rng, home_rate, away_rate)
        drift_at = [appears + self.kickoff_in_s * k / _PRE_POINTS for k in range(_PRE_POINTS)]
        drift_at += [start + self.match_s * k / _IN_POINTS for k in range(_IN_POINTS + 1)]
        drift = list(accumulate(rng.gauss(0, 0.025 if at < start else 0.03) for at in drift_at))
        sharp = [3 if _REACTION_S.get(b, 1.0) <= 0.1 else 1 for b in self.bookmakers]
        steams = [Steam(appears + self.kickoff_in_s * rng.uniform(0.15, 0.85), rng.choice((-1, 1))
                        * rng.uniform(0.12, 0.25), rng.choices(self.bookmakers, sharp)[0])
                  for _ in range(1 if rng.random() < 0.6 else 2)]
        if rng.random() < 0.4:  # now and then in play too
            steams.append(Steam(start + self.match_s * rng.uniform(0.1, 0.8), rng.choice((-1, 1))
                                * rng.uniform(0.1, 0.2), rng.choices(self.bookmakers, sharp)[0]))
        script = Script(home_rate, away_rate, [start + minute / MINUTES * self.match_s for minute, _ in goals],
                        [home for _, home in goals], drift_at, drift, sorted(steams, key=lambda s: s.at),
                        f"{self.seed}/{serial}")
        fixture = Fixture(index=index, fixture_id=f"id1{self.run:09d}{serial % 10**6:06d}",
                          event_id=(self.run or 0) % 10**7 * 10**5 + serial % 10**5,
                          home=TEAMS[home_team], away=TEAMS[away_team],
                          start_ts=start, end_ts=start + self.match_s, home_id=1000 + home_team,
                          away_id=1000 + away_team, script=script)
        if now >= start:  # already under way: no news of what came before we were listening
            fixture.status_id = 1
            for goal, at in enumerate(script.goal_times):
                if at <= now:
                    self._score(fixture, goal)
            fixture.minute = self._minute(fixture, now)
        return fixture

    def _book(self, bookmaker: str) -> tuple[float, float]:
        """(margin, reaction time) of a bookmaker: 3-7 % (exchanges 1-2 %), and how far behind it is."""
        known = self._books.get(bookmaker)
        if known is None:
            rng = random.Random(f"{self.seed}/{bookmaker}")
            margin = rng.uniform(0.01, 0.02) if bookmaker.endswith("-ex") else rng.uniform(0.03, 0.07)
            known = self._books[bookmaker] = (margin, _REACTION_S.get(bookmaker, rng.uniform(0.1, 0.8)) * self.pace)
        return known

    def _opinion(self, fixture: Fixture, bookmaker: str) -> Opinion:
        script = fixture.script
        assert script is not None
        opinion = script.books.get(bookmaker)
        if opinion is None:
            rng = random.Random(f"{script.seed}/{bookmaker}")
            walk = list(accumulate(rng.gauss(0, 0.008) for _ in script.drift_at))
            lags = [0.0 if steam.leader == bookmaker else rng.uniform(0.3, 2.0) * self.pace for steam in script.steams]
            opinion = script.books[bookmaker] = Opinion(rng.gauss(0, 0.03), rng.gauss(0, 0.03), walk, lags)
        return opinion


def result_probabilities(lead: int, home: float, away: float, draw_factor: float = 1.0) -> tuple[float, float, float]:
    """Home win, draw, away win at full time: the home side's `lead` now, plus independent Poisson
    counts of the goals each side still scores (`home`, `away` expected), draws a little likelier."""
    away_pmf = _poisson(away)
    away_cdf = list(accumulate(away_pmf))
    last = len(away_pmf) - 1
    level = win = 0.0
    p, goals = math.exp(-home), 0  # P(the home side scores `goals` more)
    while True:
        margin = goals + lead  # over the away side's goals still to come
        if 0 <= margin <= last:
            level += p * away_pmf[margin]
        if margin >= 1:
            win += p * away_cdf[min(margin - 1, last)]
        goals += 1
        if goals >= _TERMS or (goals > home and p < _NEGLIGIBLE):
            break
        p *= home / goals
    lose = max(0.0, 1.0 - win - level)
    level *= _DRAW_FACTOR * draw_factor
    total = win + level + lose
    return win / total, level / total, lose / total


def _poisson(mean: float) -> list[float]:
    """P(0), P(1), … until the rest is negligible."""
    term = math.exp(-mean)
    pmf = [term]
    for k in range(1, _TERMS):
        if k > mean and term < _NEGLIGIBLE:
            break
        term *= mean / k
        pmf.append(term)
    return pmf


def _goals(rng: random.Random, home_rate: float, away_rate: float) -> list[tuple[float, bool]]:
    """The goals of a match, (minute, home scored) in order: Poisson counts, at most five in all,
    a few more of them in the second half, as in real football."""
    for _ in range(20):
        home, away = _poisson_count(rng, home_rate), _poisson_count(rng, away_rate)
        if home + away <= _MAX_GOALS:
            break
    else:
        home, away = min(home, 3), min(away, 2)
    minutes = [rng.uniform(46, 89.5) if rng.random() < 0.55 else rng.uniform(1, 45) for _ in range(home + away)]
    scorers = [True] * home + [False] * away
    rng.shuffle(scorers)
    return sorted(zip(minutes, scorers, strict=True))


def _poisson_count(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _with_margin(probabilities: list[float], margin: float) -> list[float]:
    """The bookmaker's implied probabilities: p ** k, with k < 1 such that they sum to 1 + margin.
    Most of the margin goes on the outsiders (as bookmakers do), so a 94 % favourite is 1.05, not
    below 1.01 as a margin in proportion would make it."""
    if max(probabilities) > 1 - 1e-9:
        return probabilities  # decided: nothing left to put a margin on
    target = 1 + margin
    logs = [math.log(p) if p > 0 else 0.0 for p in probabilities]
    k, powers = 1.0, probabilities
    for _ in range(6):  # Newton on sum(p ** k) = 1 + margin from k = 1: two or three steps
        excess = sum(powers) - target
        slope = sum([q * log for q, log in zip(powers, logs, strict=True)])
        if abs(excess) < 1e-6 or slope >= 0:
            break
        k = max(0.5, k - excess / slope)
        powers = [p**k for p in probabilities]
    return powers


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    i = bisect.bisect_right(xs, x)
    if i == 0:
        return ys[0]
    if i == len(xs):
        return ys[-1]
    x0, x1 = xs[i - 1], xs[i]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


def _price(probability_with_margin: float, ladder: tuple[tuple[float, float], ...]) -> float:
    """A decimal price on the bookmaker's ladder, between 1.01 and 1001."""
    raw = min(_MAX_PRICE, max(_MIN_PRICE, 1 / max(probability_with_margin, 1e-9)))
    for top, step in ladder:
        if raw <= top:
            return min(top, max(_MIN_PRICE, round(round(raw / step) * step, 2)))
    return ladder[-1][0]
