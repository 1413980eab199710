"""A local OddsPapi v4 WebSocket server, faithful to the vendor's documented protocol.

Path /v4/ws with the key in `apiKey`; a wrong key is refused with HTTP 401 on the upgrade.
Server → client only: one fixture and at most one bookmaker per message, only changed fields,
player objects whole, string map keys, `bookmakerOutcomeId` present and `oddsId` absent; the fields
real `/v4/odds` answers carry: `bookmakerIsActive` and `suspended` per bookmaker, `marketActive` per
market, `priceAmerican`, `priceFractional`, `mainLine` and `bookmakerChangedAt` per price (that time
in `Z` milliseconds, `changedAt` in `+00:00` microseconds), whole prices as integers (`2`). At
kick-off and at a goal each bookmaker's suspension is sent as the flag alone — half of them
`suspended: true`, half `marketActive: false` on the 1X2 — and lifted just before its next open
prices. No snapshot and no replay on reconnect. `script` frames are sent verbatim first (the seed examples
in tests); then generated traffic from the market model, at `rate` frames/s (None: as fast as
the socket takes them). Faults: drop the TCP connection, close it, go silent, or send a malformed
frame, after so many frames.

The REST twin, on the same port (simulate/rest.py), serves the state the stream pushed: /v4/odds
(the WebSocket's shape, `startTime` as ISO text as the REST pages have it), /v4/scores (periods
directly under `scores`) and /v4/historical-odds (each player's recent prices, `createdAt` first),
with the vendor's cooldowns per key and endpoint (429 with `error.retryMs` and Retry-After). The
market also moves while nobody listens (`advance`), and REST faults: 5xx, slow answers, a refused
key, a stale (cached) /v4/odds answer, and the snapshot/stream race (`race_odds`: a price of the
fixture is pushed after the answer's state was taken and before the answer is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from warehouse.simulate.market import MARKET_1X2, Fixture, Market, PriceChange, ScoreUpdate
from warehouse.simulate.rest import Cooldowns, RestFaults, RestLog, answer, faulted, too_many
from warehouse.simulate.vendors import FleetMember, Vendor
from warehouse.simulate.wsserver import WebSocketSimulator

PATH = "/v4/ws"
COOLDOWN_S = {"/v4/odds": 0.5, "/v4/scores": 1.0, "/v4/historical-odds": 5.0}  # the vendor's, per key
HISTORY_KEPT = 500  # prices kept per selection for /v4/historical-odds (a simulator runs for days)
_FIREHOSE_BURST = 64  # frames per socket write at most
_PACE_S = 0.001  # a paced simulator wakes at most this often


@dataclass
class OddsPapiFaults:
    drop_after: int | None = None  # abort the TCP connection after this many frames (per connection)
    close_after: int | None = None  # close cleanly (1001) after this many frames
    silent_after: int | None = None  # stop sending, keep the socket open, after this many frames
    malformed_every: int | None = None  # every n-th frame is cut short (not JSON)
    reject_all_keys: bool = False  # HTTP 401 for every key (the stream's handshake)
    race_odds: int = 0  # the next n /v4/odds answers: a newer price of the fixture is pushed before each is sent
    stale_odds: bool = False  # /v4/odds answers each selection's price before its last (a cached answer)


class OddsPapiSimulator(WebSocketSimulator):
    def __init__(self, api_key: str, *, seed: int = 1, rate: float | None = 50.0, script: Sequence[bytes | str] = (),
                 generate: bool = True, faults: OddsPapiFaults | None = None, record: bool = True,
                 outcomes_per_frame: int = 3, market: Market | None = None, rest_faults: RestFaults | None = None,
                 cooldowns: dict[str, float] | None = None) -> None:
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
        self._suspended: set[tuple[str, str]] = set()  # (fixture, bookmaker) sent as suspended, not yet lifted
        # The vendor's state, as pushed (REST twin): fixture → its object in the WebSocket's shape.
        self.state: dict[str, dict[str, Any]] = {}
        self.history: dict[tuple[str, str, str, str, str], deque[dict[str, Any]]] = {}
        self._previous: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}  # the player before the last
        self.rest_faults = rest_faults or RestFaults()
        self.rest = RestLog()
        self.cooldowns = Cooldowns(dict(COOLDOWN_S if cooldowns is None else cooldowns), self.rest)
        self.races: list[dict[str, Any]] = []  # each race staged: fixture, bookmaker, the prices answered and pushed
        self.unsent = 0  # frames the market made while nobody listened (`advance`)
        self._live: set[ServerConnection] = set()

    # -- server ----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        return await self._listen(host, port, PATH, compression="deflate", max_size=2**20)


    def _check(self, connection: ServerConnection, request: Request) -> Any:
        parts = urlsplit(request.path)
        if parts.path in COOLDOWN_S:
            return self._rest(connection, parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()})
        if parts.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        key = parse_qs(parts.query).get("apiKey", [""])[0]
        if self.faults.reject_all_keys or key != self.api_key:
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error":401,"message":"invalid apiKey"}\n')
        return None

    def drop_connections(self) -> int:
        """Abort every open connection (a network blip); how many there were."""
        live = list(self._live)
        for ws in live:
            ws.transport.abort()
        return len(live)

    def advance(self, changes: int) -> None:
        """Move the market while nobody listens: the state (and REST) changes, nothing is pushed."""
        for _ in range(changes):
            self.unsent += len(self.render(self.market.step()))

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self._live.add(ws)
        try:
            await self._serve(ws)
        finally:
            self._live.discard(ws)

    async def _serve(self, ws: ServerConnection) -> None:
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
        for frame in self.script:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                self._remember(orjson.loads(frame))  # scripted frames are the vendor's state too
            yield frame
        while self.generate:
            yield from self.render(self.market.step())

    def render(self, change: PriceChange | ScoreUpdate) -> list[bytes]:
        """One market change as OddsPapi messages: metadata the first time a fixture or book shows,
        the status when it changed (kick-off, full time), the score when it changed (a goal another
        feed's step found first is reported with this fixture's next change) with every bookmaker's
        market suspended (or closed), then the change itself."""
        fixture = change.fixture
        now = datetime.fromtimestamp(self.market.clock(), UTC).isoformat()  # the market's time: virtual in history
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
                is_open = self.market.is_open(fixture, book)
                if not is_open:
                    out += self._suspend(fixture, book, True)
                out += self._book_prices(fixture, book, self.market.quote(fixture, book), is_open, now)
        if isinstance(change, PriceChange):
            if change.active:
                out += self._suspend(fixture, change.bookmaker, False)
            out += self._book_prices(fixture, change.bookmaker, change.prices, change.active, now)
        for message in out:
            self._remember(message)
        return [orjson.dumps(message) for message in out]

    def _book_prices(self, fixture: Fixture, book: str, prices: dict[str, float], active: bool,
                     now: str) -> list[dict[str, Any]]:
        """A bookmaker's 1X2 prices, announcing the bookmaker on the fixture the first time."""
        out: list[dict[str, Any]] = []
        if (fixture.fixture_id, book) not in self._announced:
            self._announced.add((fixture.fixture_id, book))
            out.append({"fixtureId": fixture.fixture_id, "bookmakerOdds": {book: {
                "bookmakerFixtureId": str(fixture.event_id), "bookmakerIsActive": True, "suspended": False,
                "fixturePath": f"https://{book}.example/line/football/{fixture.event_id}"}}})
        return [*out, self._prices(fixture, book, prices, active, now)]

    def _prices(self, fixture: Fixture, book: str, prices: dict[str, float], active: bool, now: str) -> dict[str, Any]:
        outcomes: dict[str, Any] = {
            outcome: {"players": {"0": {
                "active": active, "betslip": None, "bookmakerOutcomeId": f"{fixture.event_id}{outcome}",
                "changedAt": now, "bookmakerChangedAt": _vendor_time(now),
                "limit": 1000 if book == "pinnacle" else None,
                "playerName": None, "price": int(price) if price == int(price) else price,  # 2, as the vendor sends it
                "priceAmerican": _american(price), "priceFractional": _fractional(price), "mainLine": True,
                "exchangeMeta": {}, "playerId": 0}}}
            for outcome, price in list(prices.items())[: self.outcomes_per_frame]
        }
        return {"fixtureId": fixture.fixture_id,
                "bookmakerOdds": {book: {"markets": {MARKET_1X2: {"outcomes": outcomes}}}}}

    def _suspend(self, fixture: Fixture, book: str, suspended: bool) -> list[dict[str, Any]]:
        """A bookmaker-level or market-level suspension, or its lifting, as the vendor sends it: the flag
        alone (a partial update). Bookmakers take turns: half suspend the bookmaker (`suspended`), half
        the 1X2 market (`marketActive`). Nothing when the flag already says so."""
        key = (fixture.fixture_id, book)
        if (key in self._suspended) == suspended:
            return []
        if suspended:
            self._suspended.add(key)
        else:
            self._suspended.discard(key)
        books = self.market.bookmakers
        if book not in books or books.index(book) % 2 == 0:
            block: dict[str, Any] = {"suspended": suspended}
        else:
            block = {"markets": {MARKET_1X2: {"marketActive": not suspended}}}
        return [{"fixtureId": fixture.fixture_id, "bookmakerOdds": {book: block}}]

    def _forget_finished(self) -> None:
        """What was sent about fixtures the market has replaced: a simulator runs for days."""
        current = {fixture.fixture_id for fixture in self.market.fixtures}
        self._announced = {key for key in self._announced if key[0] in current}
        self._status = {key: value for key, value in self._status.items() if key in current}
        self._scores = {key: value for key, value in self._scores.items() if key in current}
        self._suspended = {key for key in self._suspended if key[0] in current}
        self.state = {key: value for key, value in self.state.items() if key in current}
        self.history = {key: value for key, value in self.history.items() if key[0] in current}
        self._previous = {key: value for key, value in self._previous.items() if key[0] in current}

    # -- the vendor's state (REST twin) ------------------------------------------------------------

    def _remember(self, message: dict[str, Any]) -> None:
        """Apply one pushed message to the state, as the protocol's merge rules say: objects merge key by
        key, a `players.<id>` object replaces the one before, score periods replace per period."""
        fixture_id = message.get("fixtureId")
        if not isinstance(fixture_id, str):
            return
        fixture = self.state.setdefault(fixture_id, {"fixtureId": fixture_id})
        for key, value in message.items():
            if key == "bookmakerOdds":
                for book, block in value.items():
                    self._remember_book(fixture_id, fixture.setdefault("bookmakerOdds", {}).setdefault(book, {}),
                                        book, block)
            elif key == "scores":
                fixture.setdefault("scores", {}).update(value.get("periods") or {})
            elif key != "fixtureId":
                fixture[key] = value

    def _remember_book(self, fixture_id: str, target: dict[str, Any], book: str, block: dict[str, Any]) -> None:
        for key, value in block.items():
            if key != "markets":
                target[key] = value
                continue
            for market_id, market in value.items():
                held = target.setdefault("markets", {}).setdefault(market_id, {})
                for mkey, mvalue in market.items():
                    if mkey != "outcomes":
                        held[mkey] = mvalue
                        continue
                    for outcome_id, outcome in mvalue.items():
                        players = held.setdefault("outcomes", {}).setdefault(outcome_id, {}).setdefault("players", {})
                        for player_id, player in (outcome.get("players") or {}).items():
                            selection = (fixture_id, book, market_id, outcome_id, player_id)
                            if player_id in players:
                                self._previous[selection] = players[player_id]
                            players[player_id] = player
                            self.history.setdefault(selection, deque(maxlen=HISTORY_KEPT)).append({
                                "createdAt": player.get("changedAt"), "price": player.get("price"),
                                "limit": player.get("limit"), "active": player.get("active"),
                                "exchangeMeta": player.get("exchangeMeta")})

    def quoted(self) -> dict[tuple[str, str, str, str, str], float | None]:
        """Every selection's price in the state: (fixture, bookmaker, market, outcome, player) → price."""
        return {(fixture_id, book, market_id, outcome_id, player_id): player.get("price")
                for fixture_id, fixture in self.state.items()
                for book, block in (fixture.get("bookmakerOdds") or {}).items()
                for market_id, market in (block.get("markets") or {}).items()
                for outcome_id, outcome in (market.get("outcomes") or {}).items()
                for player_id, player in (outcome.get("players") or {}).items()}

    async def _rest(self, connection: ServerConnection, path: str, params: dict[str, str]) -> Response:
        status, response = await self._rest_answer(connection, path, params)
        self.rest.calls.append((path, params, status))
        return response

    async def _rest_answer(self, connection: ServerConnection, path: str,
                           params: dict[str, str]) -> tuple[int, Response]:
        key = params.get("apiKey", "")
        if self.rest_faults.reject_key or key != self.api_key:
            return 401, answer(connection, 401, {"error": 401, "message": "invalid apiKey", "code": "invalid_api_key"})
        wait = self.cooldowns.wait(key, path)
        if wait:
            return 429, too_many(connection, wait, {"error": {"message": f"cooldown of {path}",
                                                              "retryMs": max(1, round(wait * 1000))}})
        failed = await faulted(connection, self.rest_faults)
        if failed is not None:
            return failed.status_code, failed
        fixture_id = params.get("fixtureId", "")
        if not fixture_id:
            return 400, answer(connection, 400, {"error": {"message": "fixtureId is required"}})
        fixture = self.state.get(fixture_id)
        if fixture is None and any(f.fixture_id == fixture_id for f in self.market.fixtures):
            fixture = {"fixtureId": fixture_id}  # the vendor's fixture, nothing pushed about it yet
        if fixture is None:
            return 404, answer(connection, 404, {"error": {"message": f"fixture {fixture_id} not found"}})
        if path == "/v4/scores":
            return 200, answer(connection, 200, {"fixtureId": fixture_id, "scores": fixture.get("scores") or {}})
        books = [b for b in params.get("bookmakers", "").split(",") if b]
        if path == "/v4/historical-odds":
            if not 1 <= len(books) <= 3:
                return 400, answer(connection, 400, {"error": {"message": "bookmakers: 1 to 3 are required"}})
            return 200, answer(connection, 200, self._history(fixture_id, books))
        body = self._odds(fixture, books)
        if self.faults.race_odds > 0:
            self.faults.race_odds -= 1
            await self._race(fixture_id, body)
        return 200, answer(connection, 200, body)

    def _odds(self, fixture: dict[str, Any], books: list[str]) -> dict[str, Any]:
        body = orjson.loads(orjson.dumps({k: v for k, v in fixture.items() if k != "scores"}))  # a copy
        if isinstance(body.get("startTime"), int | float):  # REST v4 gives ISO text where the socket gives seconds
            body["startTime"] = datetime.fromtimestamp(body["startTime"], UTC).isoformat()
        odds = body.get("bookmakerOdds") or {}
        body["bookmakerOdds"] = {b: v for b, v in odds.items() if not books or b in books}
        if self.faults.stale_odds:
            for book, block in body["bookmakerOdds"].items():
                for market_id, market in (block.get("markets") or {}).items():
                    for outcome_id, outcome in (market.get("outcomes") or {}).items():
                        players = outcome.get("players") or {}
                        for player_id in players:
                            older = self._previous.get((body["fixtureId"], book, market_id, outcome_id, player_id))
                            if older is not None:
                                players[player_id] = older
        return body

    def _history(self, fixture_id: str, books: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for (fixture, book, market_id, outcome_id, player_id), prices in self.history.items():
            if fixture == fixture_id and book in books:
                outcomes = found.setdefault(book, {"markets": {}})["markets"].setdefault(
                    market_id, {"outcomes": {}})["outcomes"]
                outcomes.setdefault(outcome_id, {"players": {}})["players"][player_id] = list(prices)
        return {"fixtureId": fixture_id, "bookmakers": found}

    async def _race(self, fixture_id: str, body: dict[str, Any]) -> None:
        """The snapshot/stream race: the answer's state is taken; before it is sent, the stream pushes a
        newer price of one of its selections (on every open connection)."""
        fixture = next((f for f in self.market.fixtures if f.fixture_id == fixture_id), None)
        books = [b for b, block in (body.get("bookmakerOdds") or {}).items()
                 if MARKET_1X2 in (block.get("markets") or {})]
        if fixture is None or not books:
            return
        book = books[0]
        answered = {o: v["players"]["0"]["price"] for o, v in
                    body["bookmakerOdds"][book]["markets"][MARKET_1X2]["outcomes"].items() if "0" in v["players"]}
        prices = self.market.quote(fixture, book)
        prices = {o: (p if p != answered.get(o) else round(p + 0.01, 3)) for o, p in prices.items()}
        message = self._prices(fixture, book, prices, True, datetime.now(UTC).isoformat())
        self._remember(message)
        frame = orjson.dumps(message)
        for ws in list(self._live):
            with contextlib.suppress(Exception):
                await self._send(ws, frame)
                if self.record:
                    self.sent.append(frame)
        outcomes = message["bookmakerOdds"][book]["markets"][MARKET_1X2]["outcomes"]
        pushed = {o: v["players"]["0"]["price"] for o, v in outcomes.items()}
        self.races.append({"fixture": fixture_id, "bookmaker": book, "answered": answered, "pushed": pushed})


def _vendor_time(iso: str) -> str:
    """The same time as the vendor also writes it: milliseconds and `Z` (`2026-10-01T07:37:34.568Z`)."""
    at = datetime.fromisoformat(iso)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _american(price: float) -> str:
    """The American (moneyline) form of a decimal price, as `/v4/odds` gives it: "+150", "-200"."""
    return f"+{round((price - 1) * 100)}" if price >= 2 else f"-{round(100 / (price - 1))}"


def _fractional(price: float) -> str:
    """The fractional (UK) form of a decimal price: "3/2" for 2.5, "1/1" for 2."""
    fraction = Fraction(price - 1).limit_denominator(100)
    return f"{fraction.numerator}/{fraction.denominator}"


_FLEET_KEY = "fleet-oddspapi-key-5b9f0c3e"


def _member(market: Market, rate: float, faults: bool) -> FleetMember:
    simulator = OddsPapiSimulator(_FLEET_KEY, rate=rate, market=market, record=False,
                                  faults=OddsPapiFaults(drop_after=400, malformed_every=97) if faults else None)
    return FleetMember(simulator, lambda url: {"url": url, "api_key_env": "FLEET_ODDSPAPI_KEY",
                                               "rest_url": url.removesuffix(PATH)})  # its REST twin


VENDOR = Vendor(
    kind="oddspapi-ws", name="oddspapi", rate=200, env={"FLEET_ODDSPAPI_KEY": _FLEET_KEY}, member=_member,
    # The simulator a [[feeds]] entry would talk to: same key, generated traffic.
    from_feed=lambda options, secrets, market: OddsPapiSimulator(secrets["api_key_env"], market=market, record=False),
    faults_doc="drops the connection after 400 frames; every 97th frame is cut short",
)
