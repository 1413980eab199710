"""Reconnect delays (warehouse/collect/backoff.py), with seeded random numbers: what Backoff does today."""

from __future__ import annotations

import random

import pytest

from warehouse.collect.backoff import Backoff


def delays(seed: int, attempts: int, **kwargs: object) -> list[float]:
    backoff = Backoff(initial=1.0, cap=60.0, long=300.0, rng=random.Random(seed))
    return [backoff.next(**kwargs) for _ in range(attempts)]  # type: ignore[arg-type]


def test_each_delay_is_half_to_all_of_a_doubling_step_equal_jitter() -> None:
    steps = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    runs = [delays(seed, len(steps)) for seed in range(200)]
    for attempt, step in enumerate(steps):
        seen = [run[attempt] for run in runs]
        assert all(step / 2 <= d <= step for d in seen), attempt
        # spread over the whole half-step: jitter, not a fixed fraction
        assert min(seen) < step * 0.55 and max(seen) > step * 0.95, attempt


def test_the_same_seed_gives_the_same_delays_and_another_seed_others() -> None:
    assert delays(7, 10) == delays(7, 10)
    assert delays(7, 10) != delays(8, 10)


def test_the_delay_never_exceeds_the_cap_however_many_attempts() -> None:
    backoff = Backoff(initial=0.5, cap=10.0, long=300.0, rng=random.Random(1))
    backoff.attempts = 10**6  # no overflow: the exponent stops growing long before
    assert all(5.0 <= backoff.next() <= 10.0 for _ in range(100))


def test_a_long_pause_is_80_to_100_percent_of_long() -> None:
    for seed in range(100):
        assert 240.0 <= delays(seed, 1, long=True)[0] <= 300.0
    # the long pause is a floor: a capped step above it stays as it is
    backoff = Backoff(initial=1.0, cap=1000.0, long=5.0, rng=random.Random(3))
    backoff.attempts = 20
    assert 500.0 <= backoff.next(long=True) <= 1000.0


@pytest.mark.parametrize(("retry_after", "low", "high"), [
    (120.0, 120.0, 120.0),  # the server's delay, when longer than ours
    (0.1, 0.5, 1.0),  # never shorter than our own step
    (0.0, 0.5, 1.0),
])
def test_retry_after_is_a_floor(retry_after: float, low: float, high: float) -> None:
    for seed in range(50):
        assert low <= delays(seed, 1, retry_after=retry_after)[0] <= high


def test_retry_after_does_not_shorten_a_long_pause_today() -> None:
    """What Backoff does today. (feeds/contract.Reaction.long says "unless the server named a delay":
    a change to Retry-After handling is expected to make a short Retry-After win.)"""
    for seed in range(50):
        assert 240.0 <= delays(seed, 1, long=True, retry_after=5.0)[0] <= 300.0


def test_reset_starts_again_from_the_initial_step() -> None:
    backoff = Backoff(initial=1.0, cap=60.0, long=300.0, rng=random.Random(5))
    for _ in range(6):
        backoff.next()
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.5 <= backoff.next() <= 1.0 and 1.0 <= backoff.next() <= 2.0
