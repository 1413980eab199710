"""What the simulators' REST twins share: JSON answers on the WebSocket server's port, cooldowns
per key and endpoint, and faults (5xx, slow answers, a refused key).

A REST twin answers plain HTTP GETs on the same host and port as its stream, as the vendors do
(api.oddspapi.io serves /v4/ws and /v4/odds; mmapi.55-tech.com /ws/subscribe and /api/v1/orders):
the WebSocket server hands it every request that is not a WebSocket handshake for its stream path.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response


@dataclass
class RestFaults:
    fail_next: int = 0  # answer the next n calls with `fail_status` (then serve again)
    fail_status: int = 500
    slow_s: float = 0.0  # answer every call this late
    reject_key: bool = False  # refuse every key (401) on the REST side


@dataclass
class RestLog:
    """What a REST twin served: every call (path, params, status), and 429s answered too soon."""

    calls: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    too_soon: int = 0  # calls that came while a 429 told them to wait (none, from a client that honours it)

    def statuses(self, path: str) -> list[int]:
        return [status for p, _, status in self.calls if p == path]


class Cooldowns:
    """The vendor's minimum interval between two calls of one endpoint with one key; a call that
    comes sooner gets a 429 naming how long to wait (and counts in `log.too_soon` if it came sooner
    than a 429 already told it)."""

    def __init__(self, seconds: dict[str, float], log: RestLog) -> None:
        self.seconds = seconds
        self.log = log
        self._last: dict[tuple[str, str], float] = {}
        self._told: dict[tuple[str, str], float] = {}

    def wait(self, key: str, path: str) -> float:
        """0 (and the call counts) or the seconds still to wait."""
        now = time.monotonic()
        slot = (key, path)
        if now < self._told.get(slot, 0.0):
            self.log.too_soon += 1
        remaining = self._last.get(slot, float("-inf")) + self.seconds.get(path, 0.0) - now
        if remaining > 0:
            self._told[slot] = now + remaining
            return remaining
        self._last[slot] = now
        return 0.0


def answer(connection: ServerConnection, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer (and, with the same status, what the vendor's clients expect: Retry-After on 429)."""
    response = connection.respond(HTTPStatus(status), "")
    payload = orjson.dumps(body)
    response.body = payload
    del response.headers["Content-Type"]
    del response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(payload))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def too_many(connection: ServerConnection, wait_s: float, body: Any) -> Response:
    return answer(connection, 429, body, {"Retry-After": str(max(1, math.ceil(wait_s)))})


async def faulted(connection: ServerConnection, faults: RestFaults) -> Response | None:
    """The fault's answer, if a fault applies now; after waiting `slow_s` in any case."""
    if faults.slow_s:
        await asyncio.sleep(faults.slow_s)
    if faults.fail_next > 0:
        faults.fail_next -= 1
        return answer(connection, faults.fail_status, {"error": faults.fail_status, "message": "internal error"})
    return None
