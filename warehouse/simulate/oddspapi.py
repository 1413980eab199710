"""A local OddsPapi v4 WebSocket server, faithful to the vendor's documented protocol.

Path /v4/ws with the key in `apiKey`; a wrong key is refused with HTTP 401 on the upgrade.
Server → client only: one fixture and at most one bookmaker per message, only changed fields,
player objects whole, string map keys, `bookmakerOutcomeId` present and `oddsId` absent. No
snapshot and no replay on reconnect. `script` frames are sent verbatim first (the seed examples
in tests); then generated traffic from the market model, at `rate` frames/s (None: as fast as
the socket takes them). Faults: drop the TCP connection, close it, go silent, or send a malformed
frame, after so many frames.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from warehouse.simulate.market import MARKET_1X2, Fixture, Market, PriceChange, ScoreUpdate
from warehouse.simulate.vendors import FleetMember, Vendor
from warehouse.simulate.wsserver import WebSocketSimulator

PATH = "/v4/ws"
_FIREHOSE_BURST = 64  # frames per socket write at most
_PACE_S = 0.001  # a paced simulator wakes at most this often


@dataclass
class OddsPapiFaults:
    drop_after: int | None = None  # abort the TCP connection after this many frames (per connection)
    close_after: int | None = None  # close cleanly (1001) after this many frames
    silent_after: int | None = None  # stop sending, keep the socket open, after this many frames
    malformed_every: int | None = None  # every n-th frame is cut short (not JSON)
    reject_all_keys: bool = False  # HTTP 401 for every key


class OddsPapiSimulator(WebSocketSimulator):
    def __init__(self, api_key: str, *, seed: int = 1, rate: float | None = 50.0, script: Sequence[bytes | str] = (),
                 generate: bool = True, faults: OddsPapiFaults | None = None, record: bool = True,
                 outcomes_per_frame: int = 3, market: Market | None = None) -> None:
        self.api_key = api_key
        self.rate = rate
        self.script = [s.encode() if isinstance(s, str) else s for s in script]
        self.generate = generate
        self.faults = faults or OddsPapiFaults()
        self.market = market or Market(seed=seed)
        self.record = record
        self.outcomes_per_frame = outcomes_per_frame  # 2 for the benchmark's "two prices per frame"
        self.sent: list[bytes] = []  # every frame sent, in order (when `record`)
        self.connections = 0
        self.refused = 0
        self._announced: set[tuple[str, str | None]] = set()
        self._status: dict[str, int] = {}  # fixture → statusId last sent
        self._scores: dict[str, tuple[int, int]] = {}  # fixture → score last sent

    # -- server ----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        return await self._listen(host, port, PATH, compression="deflate", max_size=2**20)


    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        key = parse_qs(parts.query).get("apiKey", [""])[0]
        if self.faults.reject_all_keys or key != self.api_key:
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error":401,"message":"invalid apiKey"}\n')
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        sent_here = 0
        frames = self._frames()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(Exception):
            while True:
                # Frame n is due at n / rate: send every frame due now in one burst, so high rates
                # are met too; as fast as the socket takes them when there is no rate.
                due = int((loop.time() - started) * self.rate) + 1 - sent_here if self.rate else _FIREHOSE_BURST
                burst, stop = self._burst(frames, sent_here, max(1, min(due, _FIREHOSE_BURST)))
                if burst:
                    await self._send_burst(ws, burst)
                    sent_here += len(burst)
                    if self.record:
                        self.sent.extend(burst)
                if stop is not None:
                    await self._stop(ws, stop)
                    return
                # Wake at most every millisecond (frames due meanwhile go together): polling
                # for each frame would spend a core that, here, the collector needs.
                ahead = started + sent_here / self.rate - loop.time() if self.rate else 0.0
                await asyncio.sleep(max(ahead, _PACE_S) if self.rate else 0)

    def _burst(self, frames: Iterator[bytes], sent_here: int, wanted: int) -> tuple[list[bytes], str | None]:
        """Up to `wanted` frames, and the fault (or end of the script) that comes after them, if any."""
        faults = self.faults
        burst: list[bytes] = []
        for n in range(sent_here, sent_here + wanted):
            for fault in ("silent_after", "drop_after", "close_after"):
                limit = getattr(faults, fault)
                if limit is not None and n >= limit:
                    return burst, fault
            frame = next(frames, None)
            if frame is None:
                return burst, "end"
            if faults.malformed_every and (self.sent_count + len(burst) + 1) % faults.malformed_every == 0:
                frame = frame[: len(frame) // 2]
            burst.append(frame)
        return burst, None

    @staticmethod
    async def _stop(ws: ServerConnection, how: str) -> None:
        if how == "drop_after":
            ws.transport.abort()
        elif how == "close_after":
            await ws.close(1001, "going away")
        else:  # silent, or nothing more to send: keep the socket open
            await ws.wait_closed()

    # -- traffic ---------------------------------------------------------------------------------

    def _frames(self):
        yield from self.script
        while self.generate:
            yield from self.render(self.market.step())

    def render(self, change: PriceChange | ScoreUpdate) -> list[bytes]:
        """One market change as OddsPapi messages: metadata the first time a fixture or book shows,
        the status when it changed (kick-off, full time), the score when it changed (a goal another
        feed's step found first is reported with this fixture's next change) with every bookmaker's
        market suspended (or closed), then the change itself."""
        fixture = change.fixture
        now = datetime.now(UTC).isoformat()
        out: list[dict[str, Any]] = []
        news = False
        if (fixture.fixture_id, None) not in self._announced:
            self._forget_finished()
            self._announced.add((fixture.fixture_id, None))
            out.append({"fixtureId": fixture.fixture_id, "participant1Id": fixture.home_id,
                        "participant2Id": fixture.away_id, "sportId": 10, "statusId": fixture.status_id,
                        "startTime": int(fixture.start_ts),
                        "seasonId": None, "updatedAt": now})
            self._status[fixture.fixture_id] = fixture.status_id
        elif self._status[fixture.fixture_id] != fixture.status_id:  # only the changed field
            self._status[fixture.fixture_id] = fixture.status_id
            out.append({"fixtureId": fixture.fixture_id, "statusId": fixture.status_id, "updatedAt": now})
            news = True
        score = (fixture.home_score, fixture.away_score)
        if isinstance(change, ScoreUpdate) or (fixture.status_id and self._scores.get(fixture.fixture_id) != score):
            news = news or self._scores.get(fixture.fixture_id, score) != score
            self._scores[fixture.fixture_id] = score
            out.append({"fixtureId": fixture.fixture_id, "scores": {"periods": {"0": {
                "participant1Score": fixture.home_score, "participant2Score": fixture.away_score, "updatedAt": now}}}})
        if news:  # kick-off, a goal, full time: every bookmaker stops taking bets at once
            for book in self.market.bookmakers:
                out += self._prices(fixture, book, self.market.quote(fixture, book),
                                    self.market.is_open(fixture, book), now)
        if isinstance(change, PriceChange):
            out += self._prices(fixture, change.bookmaker, change.prices, change.active, now)
        return [orjson.dumps(message) for message in out]

    def _prices(self, fixture: Fixture, book: str, prices: dict[str, float], active: bool,
                now: str) -> list[dict[str, Any]]:
        """A bookmaker's 1X2 prices, announcing the bookmaker on the fixture the first time."""
        out: list[dict[str, Any]] = []
        if (fixture.fixture_id, book) not in self._announced:
            self._announced.add((fixture.fixture_id, book))
            out.append({"fixtureId": fixture.fixture_id, "bookmakerOdds": {book: {
                "bookmakerFixtureId": str(fixture.event_id),
                "fixturePath": f"https://{book}.example/line/football/{fixture.event_id}"}}})
        outcomes: dict[str, Any] = {
            outcome: {"players": {"0": {
                "active": active, "betslip": None, "bookmakerOutcomeId": f"{fixture.event_id}{outcome}",
                "changedAt": now, "limit": 1000 if book == "pinnacle" else None, "playerName": None,
                "price": price, "exchangeMeta": {}, "playerId": 0}}}
            for outcome, price in list(prices.items())[: self.outcomes_per_frame]
        }
        out.append({"fixtureId": fixture.fixture_id,
                    "bookmakerOdds": {book: {"markets": {MARKET_1X2: {"outcomes": outcomes}}}}})
        return out

    def _forget_finished(self) -> None:
        """What was sent about fixtures the market has replaced: a simulator runs for days."""
        current = {fixture.fixture_id for fixture in self.market.fixtures}
        self._announced = {key for key in self._announced if key[0] in current}
        self._status = {key: value for key, value in self._status.items() if key in current}
        self._scores = {key: value for key, value in self._scores.items() if key in current}


_FLEET_KEY = "fleet-oddspapi-key-5b9f0c3e"


def _member(market: Market, rate: float, faults: bool) -> FleetMember:
    simulator = OddsPapiSimulator(_FLEET_KEY, rate=rate, market=market, record=False,
                                  faults=OddsPapiFaults(drop_after=400, malformed_every=97) if faults else None)
    return FleetMember(simulator, lambda url: {"url": url, "api_key_env": "FLEET_ODDSPAPI_KEY"})


VENDOR = Vendor(
    kind="oddspapi-ws", name="oddspapi", rate=200, env={"FLEET_ODDSPAPI_KEY": _FLEET_KEY}, member=_member,
    # The simulator a [[feeds]] entry would talk to: same key, generated traffic.
    from_feed=lambda options, secrets, market: OddsPapiSimulator(secrets["api_key_env"], market=market, record=False),
    faults_doc="drops the connection after 400 frames; every 97th frame is cut short",
)
