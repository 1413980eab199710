"""Reconnect delays: exponential with jitter, long for auth/maintenance, never a hot loop."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float, cap: float, long: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap, self.long = initial, cap, long
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self, *, retry_after: float | None = None, long: bool = False) -> float:
        """The pause before the next attempt: half to all of the exponential step (equal jitter)."""
        step = min(self.cap, self.initial * 2 ** min(self.attempts, 30))
        self.attempts += 1
        delay = self._rng.uniform(step / 2, step)
        if long:
            delay = max(delay, self._rng.uniform(self.long * 0.8, self.long))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def reset(self) -> None:
        self.attempts = 0
