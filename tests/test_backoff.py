"""Reconnect delays (warehouse/backoff.py), with seeded random numbers: exponential steps with
jitter; the server's Retry-After wins; the long pause is for when it names none."""

from __future__ import annotations

import random

from warehouse.backoff import NAMED_JITTER_MIN_S, Backoff, named_delay


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


def test_reset_starts_again_from_the_initial_step() -> None:
    backoff = Backoff(initial=1.0, cap=60.0, long=300.0, rng=random.Random(5))
    for _ in range(6):
        backoff.next()
    assert backoff.attempts == 6
    backoff.reset()
    assert backoff.attempts == 0
    assert 0.5 <= backoff.next() <= 1.0 and 1.0 <= backoff.next() <= 2.0


def test_a_named_delay_is_waited_with_a_little_jitter_even_when_the_pause_would_be_long() -> None:
    backoff = Backoff(1.0, 60.0, 300.0, rng=random.Random(3))
    delays = [backoff.next(retry_after=1.0, long=True) for _ in range(200)]
    assert all(1.0 <= d <= 1.0 + NAMED_JITTER_MIN_S for d in delays)
    assert len(set(delays)) > 100, "jittered, so clients told the same second do not return together"


def test_a_long_named_delay_is_honoured_and_not_cut_to_the_cap() -> None:
    backoff = Backoff(1.0, 60.0, 300.0, rng=random.Random(3))
    assert 900.0 <= backoff.next(retry_after=900.0) <= 990.0


def test_without_a_named_delay_the_long_pause_applies() -> None:
    backoff = Backoff(1.0, 60.0, 300.0, rng=random.Random(3))
    assert all(240.0 <= backoff.next(long=True) <= 300.0 for _ in range(20))


def test_retry_after_zero_is_no_hot_loop() -> None:
    backoff = Backoff(1.0, 60.0, 300.0, rng=random.Random(3))
    assert min(backoff.next(retry_after=0.0) for _ in range(100)) >= 0.5


def test_exponential_steps_with_equal_jitter_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 8.0, 300.0, rng=random.Random(3))
    steps = [backoff.next() for _ in range(6)]
    for delay, step in zip(steps, (1, 2, 4, 8, 8, 8), strict=True):
        assert step / 2 <= delay <= step
    backoff.reset()
    assert backoff.next() <= 1.0


def test_named_delay_never_shortens() -> None:
    rng = random.Random(5)
    assert all(named_delay(s, rng) >= s for s in (0.0, 0.5, 2.0, 30.0))


def test_without_a_long_pause_of_its_own_the_long_pause_is_the_cap() -> None:
    """The writer's database connection has no refused keys or maintenance answers: its delays stay capped."""
    backoff = Backoff(0.25, 5.0, rng=random.Random(3))
    backoff.attempts = 20
    assert all(2.5 <= backoff.next(long=True) <= 5.0 for _ in range(100))
