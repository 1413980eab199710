"""A local Saba OddsDirect GetEvents push server (SSE), faithful to the vendor's documented protocol.

POST /login and /refreshToken issue tokens that expire (10 minutes by default); the stream at
/sports/stream/{v1|beta}/GetEvents takes the token as `token=` or `Authorization: Bearer`,
checks Accept and Accept-Encoding (97) and the OData query (98), and answers maintenance (99,
HTTP 503) and internal errors (100, HTTP 500) when told to. Frames are exactly
`id: <id>\\r\\ndata: <json>\\r\\n\\r\\n`: status 1 with the full state first, then status 0 deltas
with all three arrays present. A reconnect with a Last-Event-ID still in the bounded cache
gets the missed deltas replayed; otherwise status 3 with the full state. Keep-alives come every
`keepalive_s`, as an SSE comment or (`keepalive_form="data"`) a `data: KEEPALIVE` event: the
vendor documents the word, not its wire form. The deltas are produced continuously, connected or
not, like the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from warehouse.simulate.market import Fixture, Market, PriceChange, ScoreUpdate
from warehouse.simulate.vendors import FleetMember, Streams, Vendor

STREAM_PATHS = ("/sports/stream/v1/GetEvents", "/sports/stream/beta/GetEvents")
_ENCODINGS = {"gzip", "deflate", "br", "identity", "*", ""}
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 406: "Not Acceptable",
            500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class SabaFaults:
    drop_after: int | None = None  # abort the stream after this many frames (script entries) per connection
    lose_cache_at_drop: bool = False  # the first connection's drop also forgets the resume cache (a vendor restart)
    maintenance: bool = False  # answer stream requests with 503 / status 99
    internal_error: bool = False  # answer stream requests with 500 / status 100
    malformed_every: int | None = None  # every n-th delta is cut short (not JSON)
    reject_tokens: bool = False  # every token is refused (HTTP 401)
    refuse_refresh: bool = False  # /refreshToken answers 401 (A001), as for an expired session; /login still works
    split_frames: bool = False  # write each frame in two pieces (events split across TCP reads)
    # a slow link: after this many frames, each next one is written `slow_bytes` at a time, `slow_pause_s`
    # apart (by default a byte a second: a slow loris)
    slow_after: int | None = None
    slow_bytes: int = 1
    slow_pause_s: float = 1.0


class SabaSimulator:
    tls: ssl.SSLContext | None = None  # set before start() to serve https:// (the TLS tests)
    def __init__(self, *, vendor_id: str = "vendor", member_id: str = "member", static_token: str | None = None,
                 seed: int = 1, rate: float | None = 20.0, keepalive_s: float = 5.0, cache_size: int = 1000,
                 token_ttl_s: float = 600.0, faults: SabaFaults | None = None,
                 script: list[tuple[str, bytes] | bytes] | None = None, market: Market | None = None,
                 record: bool = True, keepalive_form: str = "comment") -> None:
        self.vendor_id, self.member_id, self.static_token = vendor_id, member_id, static_token
        self.rate, self.keepalive_s, self.token_ttl_s = rate, keepalive_s, token_ttl_s
        self.keepalive = {"comment": b": KEEPALIVE\r\n", "data": b"data: KEEPALIVE\r\n\r\n"}[keepalive_form]
        self.faults = faults or SabaFaults()
        # Instead of the market (tests), every connection gets these: (id, data) frames sent as the
        # vendor frames them, or bytes written as they are (what else the standard allows: `retry:`,
        # `event:`, a block with only an `id`, an empty `id`, comments, other line ends).
        self.script = script
        self.market = market or Market(seed=seed)
        self.events: dict[int, dict[str, Any]] = {}  # the state a snapshot shows
        self.markets: dict[int, dict[str, Any]] = {}
        self._follow_fixtures()
        self.cache: deque[tuple[int, bytes]] = deque(maxlen=cache_size)
        self.head = 81722  # id of the latest delta (the state the snapshot shows)
        self.record = record  # keep every frame id sent (tests); off for a long-running simulator
        self.sent: dict[int, list[str]] = {}  # connection number → ids of the frames it got (when `record`)
        self.sent_count = 0  # frames sent, over every connection (what a collector should have stored)
        self.resume_requests: list[str | None] = []  # Last-Event-ID of every stream request
        self.logins = 0  # tokens issued, by /login or /refreshToken
        self.refreshes = 0  # of which by /refreshToken
        self._tokens: dict[str, float] = {}
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._connections = 0
        self.streams = Streams()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=self.tls)
        if self.rate:
            self._ticker = asyncio.create_task(self._tick_forever())
        bound = self._server.sockets[0].getsockname()
        return f"{'https' if self.tls else 'http'}://{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


    def lose_cache(self) -> None:
        """Forget every cached delta: the next resume gets status 3 (Reset)."""
        self.cache.clear()

    # -- traffic ---------------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(1 / self.rate)  # type: ignore[operator]

    async def tick(self, frames: int = 1) -> None:
        """Produce the next delta(s) and wake the streams."""
        for _ in range(frames):
            self.head += 1
            self.cache.append((self.head, self._delta(self.market.step())))
        async with self._changed:
            self._changed.notify_all()

    def _delta(self, change: PriceChange | ScoreUpdate) -> bytes:
        fixture = change.fixture
        events_add, events_remove, markets_add, markets_remove = self._follow_fixtures()
        events: list[dict[str, Any]] = []
        markets: list[dict[str, Any]] = []
        event = self.events.get(fixture.event_id)
        if event is None:
            return _data(0, "Success", events_add=events_add, events_remove=events_remove,
                         markets_add=markets_add, markets_remove=markets_remove)
        game, status = _game(fixture), _event_status(fixture)
        # Kick-off, a goal, full time, whichever feed's step found it: the event changes and the
        # market is suspended (or closed) in the same delta.
        news = isinstance(change, ScoreUpdate) or status != {k: event[k] for k in status} or any(
            event["gameInfo"][k] != game[k] for k in ("liveHomeScore", "liveAwayScore"))
        if news:
            event.update(status)
            event["gameInfo"].update(game)
            events.append({"eventId": fixture.event_id, **status, "hasLiveMarket": True,
                           "gameInfo": dict(event["gameInfo"])})
        if news or isinstance(change, PriceChange):
            market = self._market(fixture, self.market.quote(fixture, "saba"), self.market.is_open(fixture, "saba"))
            self.markets[market["marketId"]] = market
            markets.append({k: market[k] for k in ("marketId", "eventId", "betType", "isLive", "marketStatus",
                                                   "sort")}
                           | {"selections": [{k: v for k, v in s.items() if k != "keyName"}
                                             for s in market["selections"]]})
        return _data(0, "Success", events_add=events_add, events_change=events, events_remove=events_remove,
                     markets_add=markets_add, markets_change=markets, markets_remove=markets_remove)

    def _follow_fixtures(self) -> tuple[list[dict[str, Any]], list[int], list[dict[str, Any]], list[int]]:
        """Events (and their markets) for the market's new fixtures, removals for those it replaced:
        (events added, event ids removed, markets added, market ids removed)."""
        current = {fixture.event_id: fixture for fixture in self.market.fixtures}
        events_remove = [event_id for event_id in self.events if event_id not in current]
        markets_remove = [market_id for market_id, market in self.markets.items() if market["eventId"] not in current]
        for event_id in events_remove:
            del self.events[event_id]
        for market_id in markets_remove:
            del self.markets[market_id]
        events_add, markets_add = [], []
        for event_id, fixture in current.items():
            if event_id not in self.events:
                self.events[event_id] = _event(fixture)
                market = self._market(fixture, self.market.quote(fixture, "saba"), self.market.is_open(fixture, "saba"))
                self.markets[market["marketId"]] = market
                events_add.append(self.events[event_id])
                markets_add.append(market)
        return events_add, events_remove, markets_add, markets_remove

    def _market(self, fixture: Fixture, prices: dict[str, float], active: bool) -> dict[str, Any]:
        keys = {"101": ("1", "Home"), "102": ("x", "Draw"), "103": ("2", "Away")}
        return {
            "sportType": 1, "eventId": fixture.event_id, "betType": 5, "betTypeName": "FT.1X2",
            "marketId": _market_id(fixture), "maxBet": 500.0, "isLive": fixture.status_id == 1,
            "marketStatus": "running" if active else "suspend", "category": 1, "sort": 1, "combo": 0,
            "selections": [{"key": keys[o][0], "keyName": keys[o][1], "point": None, "oddsPrice": odds_formats(price)}
                           for o, price in prices.items()],
        }

    def snapshot(self, status: int) -> bytes:
        return _data(status, "InitialData" if status == 1 else "Reset",
                     events_add=list(self.events.values()), markets_add=list(self.markets.values()))

    # -- HTTP ------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").strip()
            method, target, _ = request_line.split(" ", 2)
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode("latin-1").strip()):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            parts = urlsplit(target)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if method == "POST" and parts.path in ("/login", "/refreshToken"):
                await self._login(writer, body, refresh=parts.path == "/refreshToken")
            elif method == "GET" and parts.path in STREAM_PATHS:
                await self._stream(reader, writer, headers, params)
            else:
                await _respond(writer, 404, {"message": "not found"})
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # the client went away, sent garbage, or the simulator is stopping
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _login(self, writer: asyncio.StreamWriter, body: bytes, refresh: bool) -> None:
        try:
            credentials = orjson.loads(body)
        except orjson.JSONDecodeError:
            credentials = {}
        wrong = credentials.get("vendor_id") != self.vendor_id or credentials.get("vendor_member_id") != self.member_id
        if wrong or (refresh and self.faults.refuse_refresh):
            await _respond(writer, 401, {"statusCode": 401, "errorCode": "A001", "message": "Unauthorized"})
            return
        self.logins += 1
        self.refreshes += refresh
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_ttl_s
        await _respond(writer, 200, {"access_token": token, "token_type": "Bearer"})

    def _token_ok(self, headers: dict[str, str], params: dict[str, str]) -> bool:
        if self.faults.reject_tokens:
            return False
        token = params.get("token") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token and token == self.static_token:
            return True
        return self._tokens.get(token, 0) > time.monotonic()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str],
                      params: dict[str, str]) -> None:
        faults = self.faults
        self.resume_requests.append(headers.get("last-event-id"))
        if not self._token_ok(headers, params):
            await _respond(writer, 401, {"statusCode": 401, "errorCode": "A001", "message": "Unauthorized"})
            return
        if "text/event-stream" not in headers.get("accept", ""):
            await _respond(writer, 406, {"message": "Accept: text/event-stream required"})
            return
        encodings = {e.split(";")[0].strip().lower() for e in headers.get("accept-encoding", "").split(",")}
        if not encodings <= _ENCODINGS:
            await _respond(writer, 400, {"status": 97, "message": "Invalid Accept-Encoding"})
            return
        query = params.get("query", "")
        if query and (not query.startswith("$") or "INVALID" in query):
            await _respond(writer, 400, {"status": 98, "message": "Invalid OData query attributes"})
            return
        if faults.maintenance:
            await _respond(writer, 503, {"status": 99, "message": "System under maintenance"}, retry_after=1)
            return
        if faults.internal_error:
            await _respond(writer, 500, {"status": 100, "message": "Internal Server Error"})
            return
        self._connections += 1
        number = self._connections
        sent = _Sent(self.sent.setdefault(number, []) if self.record else None, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     b"Connection: close\r\n\r\n")
        # Open from now until the client's side closes (it sends nothing more: EOF is its close).
        self.streams.up()
        def gone(_: object) -> None:
            self.streams.down()
            writer.transport.abort()  # the stream ends at its next write

        closed = asyncio.ensure_future(reader.read())
        closed.add_done_callback(gone)
        try:
            await self._events(writer, headers, sent, number)
        finally:
            closed.cancel()

    async def _events(self, writer: asyncio.StreamWriter, headers: dict[str, str], sent: _Sent,
                      number: int) -> None:
        """The stream of connection `number` (counted from 1)."""
        faults = self.faults
        last = headers.get("last-event-id")
        if self.script is not None:
            for scripted in self.script:
                if isinstance(scripted, bytes):
                    await self._write(writer, sent, scripted)
                else:
                    await self._send(writer, sent, *scripted)
                if faults.drop_after is not None and sent.count >= faults.drop_after:
                    writer.transport.abort()
                    return
            while True:
                await asyncio.sleep(self.keepalive_s)
                writer.write(self.keepalive)
                await writer.drain()
        cached_ids = [i for i, _ in self.cache]
        if last and last.isdigit() and int(last) in cached_ids:
            cursor = int(last)  # replay what the client missed from here
        else:
            cursor = self.head
            await self._send(writer, sent, str(self.head), self.snapshot(3 if last else 1))
        while True:
            pending = [(i, f) for i, f in self.cache if i > cursor]
            if pending and pending[0][0] != cursor + 1:
                return  # the client fell out of the cache: close; its resume gets status 3
            for frame_id, frame in pending:
                if faults.drop_after is not None and sent.count >= faults.drop_after:
                    if faults.lose_cache_at_drop and number == 1:
                        self.lose_cache()
                    writer.transport.abort()
                    return
                if faults.malformed_every and frame_id % faults.malformed_every == 0:
                    frame = frame[: len(frame) // 2]
                await self._send(writer, sent, str(frame_id), frame)
                cursor = frame_id
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), self.keepalive_s)
                except TimeoutError:
                    writer.write(self.keepalive)
                    await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, sent: _Sent, frame_id: str, data: bytes) -> None:
        await self._write(writer, sent, b"id: " + frame_id.encode() + b"\r\ndata: " + data + b"\r\n\r\n")
        if sent.ids is not None:
            sent.ids.append(frame_id)

    async def _write(self, writer: asyncio.StreamWriter, sent: _Sent, wire: bytes) -> None:
        if sent.reader.at_eof():  # the client closed: what is written now never reaches it, and is not "sent"
            raise ConnectionResetError("the client closed the stream")
        faults = self.faults
        if faults.slow_after is not None and sent.count >= faults.slow_after:
            for start in range(0, len(wire) - 1, faults.slow_bytes):  # all but the last byte: busy, not complete
                writer.write(wire[start:min(start + faults.slow_bytes, len(wire) - 1)])
                await writer.drain()
                await asyncio.sleep(faults.slow_pause_s)
            wire = wire[-1:]
        if faults.split_frames:
            middle = len(wire) // 2
            writer.write(wire[:middle])
            await writer.drain()
            await asyncio.sleep(0.001)
            wire = wire[middle:]
        writer.write(wire)
        await writer.drain()
        sent.count += 1
        self.sent_count += 1


@dataclass
class _Sent:
    """What one connection was sent: a count, and the frame ids when the simulator records them."""

    ids: list[str] | None
    reader: asyncio.StreamReader  # the client's side: at its end once the client closed the connection
    count: int = 0


async def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any],
                   retry_after: int | None = None) -> None:
    payload = orjson.dumps(body)
    head = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
    if retry_after is not None:
        head += f"Retry-After: {retry_after}\r\n"
    head += f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode() + payload)
    await writer.drain()


def _data(status: int, message: str, *, events_add: list | None = None, events_change: list | None = None,
          events_remove: list | None = None, markets_add: list | None = None, markets_change: list | None = None,
          markets_remove: list | None = None) -> bytes:
    return orjson.dumps({"status": status, "message": message, "payload": {
        "events": {"add": events_add or [], "change": events_change or [], "remove": events_remove or []},
        "markets": {"add": markets_add or [], "change": markets_change or [], "remove": markets_remove or []},
    }})


def _event(fixture: Fixture) -> dict[str, Any]:
    kickoff = datetime.fromtimestamp(fixture.start_ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "sportType": 1, "sportName": "Soccer", "leagueId": 1001, "leagueName": "Simulated League",
        "eventId": fixture.event_id, "eventCode": f"E{fixture.event_id}", **_event_status(fixture),
        "isMainMarket": True, "kickOffTime": kickoff, "globalShowTime": kickoff,
        "isParlay": True, "hasLiveMarket": True, "marketCount": 1, "marketCategories": [1],
        "teamInfo": {"homeId": fixture.home_id, "homeName": fixture.home,
                     "awayId": fixture.away_id, "awayName": fixture.away},
        "gameInfo": {"clockDirection": "inc", "isHt": False, **_game(fixture)},
        "soccerInfo": {"homeRedCard": 0, "awayRedCard": 0, "homeYellowCard": 0, "awayYellowCard": 0},
    }


def _event_status(fixture: Fixture) -> dict[str, Any]:
    return {"eventStatus": "closed" if fixture.status_id == 2 else "running", "isLive": fixture.status_id == 1}


def _game(fixture: Fixture) -> dict[str, Any]:
    return {"livePeriod": 1 if fixture.minute <= 45 else 2, "seconds": fixture.minute * 60,
            "liveHomeScore": fixture.home_score, "liveAwayScore": fixture.away_score}


def _market_id(fixture: Fixture) -> int:
    return fixture.event_id * 10 + 5  # one FT.1X2 market (bet type 5) per event


def odds_formats(decimal: float) -> dict[str, float]:
    hong_kong = round(decimal - 1, 3)
    malay = hong_kong if hong_kong <= 1 else round(-1 / hong_kong, 3)
    american = round(hong_kong * 100 if hong_kong >= 1 else -100 / hong_kong, 0)
    indo = hong_kong if hong_kong >= 1 else round(-1 / hong_kong, 3)
    return {"parlayPrice": decimal, "malayPrice": malay, "hongKongPrice": hong_kong, "decimalPrice": decimal,
            "indoPrice": indo, "americanPrice": american}


def _from_feed(options: Any, secret_values: Mapping[str, str], market: Market) -> SabaSimulator:
    """The simulator a [[feeds]] entry would talk to: its token, or its login credentials."""
    return SabaSimulator(vendor_id=options.vendor_id or "vendor",
                         member_id=secret_values.get("vendor_member_id_env", "member"),
                         static_token=secret_values.get("token_env"), market=market, record=False)


_FLEET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.fleet-saba"


def _member(market: Market, rate: float, faults: bool) -> FleetMember:
    simulator = SabaSimulator(static_token=_FLEET_TOKEN, rate=rate, keepalive_s=2, cache_size=100_000, market=market,
                              faults=SabaFaults(drop_after=150, malformed_every=53) if faults else None)
    return FleetMember(simulator, lambda url: {"url": f"{url}/sports/stream/v1/GetEvents",
                                               "token_env": "FLEET_SABA_TOKEN"})


VENDOR = Vendor(kind="saba-sse", name="saba", rate=50, env={"FLEET_SABA_TOKEN": _FLEET_TOKEN}, member=_member,
                from_feed=_from_feed, faults_doc="drops the stream after 150 frames; every 53rd delta is cut short")
