"""Reconnect delays: exponential with jitter, long for auth/maintenance, never a hot loop.

The one backoff of the package: feed connections and resyncs (collect/) and the writer's database
connection (store/) wait with it."""

from __future__ import annotations

import random

# When the server names a delay (Retry-After), we wait that plus up to this share of it (and at
# least NAMED_JITTER_MIN_S) more, so that many clients told the same moment do not all come back at once.
NAMED_JITTER = 0.1
NAMED_JITTER_MIN_S = 0.25


class Backoff:
    def __init__(self, initial: float, cap: float, long: float | None = None, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self.long = cap if long is None else long  # without a long pause of its own: the cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self, *, retry_after: float | None = None, long: bool = False) -> float:
        """The pause before the next attempt.

        The server's Retry-After wins when it names one: that delay with a little jitter (a 503 with
        `Retry-After: 1` costs one second, not the long pause). Otherwise half to all of the
        exponential step (equal jitter), or the long pause (`backoff_long_s`) after a refused key or
        a maintenance answer that named no delay."""
        step = min(self.cap, self.initial * 2 ** min(self.attempts, 30))
        self.attempts += 1
        if retry_after is not None:  # a `Retry-After: 0` repeated must not make a hot loop either
            return max(named_delay(retry_after, self._rng), self.initial / 2)
        delay = self._rng.uniform(step / 2, step)
        if long:
            delay = max(delay, self._rng.uniform(self.long * 0.8, self.long))
        return delay

    def reset(self) -> None:
        self.attempts = 0


def named_delay(seconds: float, rng: random.Random | None = None) -> float:
    """A delay the server named (Retry-After, retryMs), with a little jitter on top, never less."""
    seconds = max(0.0, seconds)
    return seconds + (rng or random).uniform(0, max(NAMED_JITTER_MIN_S, seconds * NAMED_JITTER))
