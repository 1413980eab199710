"""A seeded model of live football markets that every simulator renders in its own protocol.

Each fixture has a true 1X2 probability that moves as a random walk in log-odds; every bookmaker
quotes it with its own margin (around 5%) and a little noise of its own, so moves are correlated
across bookmakers. Goals move the line, suspend the market for a few steps and change the score.
The same seed gives the same sequence of changes (timestamps aside).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

BOOKMAKERS = ("pinnacle", "bet365", "stake", "22bet", "starcasino.be", "betfair-ex")
OUTCOMES = ("101", "102", "103")  # OddsPapi 1X2 full time: home, draw, away
MARKET_1X2 = "101"
_LOGIT_LIMIT = 12.0


@dataclass
class Fixture:
    index: int
    fixture_id: str  # OddsPapi/MM style, e.g. "id1000000861624412"
    event_id: int  # Saba style integer id
    home: str
    away: str
    logits: list[float]  # home/draw/away log-odds of the true probabilities
    home_score: int = 0
    away_score: int = 0
    minute: int = 1
    status_id: int = 1  # 0 not started, 1 live, 2 finished
    start_ts: float = 0.0  # kick-off, Unix seconds
    suspended_steps: int = 0

    def probabilities(self) -> list[float]:
        top = max(self.logits)  # softmax from the largest: exp() of a logit alone could overflow
        exps = [math.exp(v - top) for v in self.logits]
        total = sum(exps)
        return [e / total for e in exps]


@dataclass
class PriceChange:
    fixture: Fixture
    bookmaker: str
    prices: dict[str, float]  # outcome → decimal price
    active: bool


@dataclass
class ScoreUpdate:
    fixture: Fixture


@dataclass
class Market:
    seed: int = 1
    fixtures_count: int = 4
    bookmakers: tuple[str, ...] = BOOKMAKERS
    goal_probability: float = 0.01  # per step
    kickoff_in_s: float = 20.0  # the last fixture is pre-match and kicks off this long after creation
    fixtures: list[Fixture] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        teams = ["Partizan", "Buducnost", "Ajax", "Benfica", "Celtic", "Rangers", "Lazio", "Sevilla", "Porto",
                 "Braga", "Malmo", "Brondby"]
        self.margins = {b: 0.03 + 0.04 * self.rng.random() for b in self.bookmakers}
        for i in range(self.fixtures_count):
            home, away = teams[(2 * i) % len(teams)], teams[(2 * i + 1) % len(teams)]
            strength = self.rng.uniform(-0.8, 0.8)
            self.fixtures.append(Fixture(
                index=i, fixture_id=f"id10000008616244{12 + i:02d}", event_id=38255274 + i, home=home, away=away,
                logits=[strength, -0.25, -strength],
            ))
        now = time.time()
        for fixture in self.fixtures:
            fixture.start_ts = now - 60 * fixture.minute
        prematch = self.fixtures[-1]
        prematch.status_id, prematch.minute, prematch.start_ts = 0, 0, now + self.kickoff_in_s

    def quote(self, fixture: Fixture, bookmaker: str) -> dict[str, float]:
        """The bookmaker's prices: true probabilities plus its margin and its own small noise."""
        margin = self.margins.get(bookmaker, 0.05)
        probs = [p * math.exp(self.rng.gauss(0, 0.01)) for p in fixture.probabilities()]
        total = sum(probs)
        # Bookmakers quote between 1.01 and 1001: a long random walk must not reach 1.0 (no payout).
        return {o: min(1001.0, max(1.01, round(1 / ((p / total) * (1 + margin)), 3)))
                for o, p in zip(OUTCOMES, probs, strict=True)}

    def step(self) -> PriceChange | ScoreUpdate:
        """The next change somewhere in the market."""
        fixture = self.rng.choice(self.fixtures)
        if fixture.status_id == 0 and time.time() >= fixture.start_ts:
            fixture.status_id, fixture.minute = 1, 1  # kick-off: reported with the (0-0) score
            return ScoreUpdate(fixture)
        if fixture.suspended_steps:
            fixture.suspended_steps -= 1
            return PriceChange(fixture, self.rng.choice(self.bookmakers), self.quote(fixture, "pinnacle"),
                               active=fixture.suspended_steps == 0)
        if self.rng.random() < self.goal_probability and fixture.status_id == 1:
            return self._goal(fixture)
        shock = self.rng.gauss(0, 0.03)
        fixture.logits[0] = _bounded(fixture.logits[0] + shock)
        fixture.logits[2] = _bounded(fixture.logits[2] - shock)
        clock_ticks = self.rng.random() < 0.1
        if fixture.status_id == 1:
            fixture.minute = min(95, fixture.minute + clock_ticks)
        bookmaker = self.rng.choice(self.bookmakers)
        return PriceChange(fixture, bookmaker, self.quote(fixture, bookmaker), active=True)

    def _goal(self, fixture: Fixture) -> ScoreUpdate:
        home = self.rng.random() < 0.55
        if home:
            fixture.home_score += 1
            fixture.logits[0] = _bounded(fixture.logits[0] + 0.9)
        else:
            fixture.away_score += 1
            fixture.logits[2] = _bounded(fixture.logits[2] + 0.9)
        fixture.suspended_steps = 3 * len(self.bookmakers)
        return ScoreUpdate(fixture)


def _bounded(logit: float) -> float:
    """A simulator runs for days: thousands of goals must not walk a logit off to infinity. At ±12
    an outcome is already priced at a bookmaker's 1.01 or 1001."""
    return min(_LOGIT_LIMIT, max(-_LOGIT_LIMIT, logit))
