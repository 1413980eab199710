"""Reconnect delays: the server's Retry-After wins; the long pause is for when it names none."""

from __future__ import annotations

import random

from warehouse.collect.backoff import NAMED_JITTER_MIN_S, Backoff, named_delay


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
