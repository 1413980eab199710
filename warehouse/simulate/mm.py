"""A local 55-tech MM WebSocket server, faithful to the vendor's documented protocol.

Path /ws/subscribe (a plain HTTP request gets 426). No auth at connect; the client must send
`subscribe` within `auth_timeout_s` or the server closes. Keys are UUIDs: a missing key, a
malformed one, an unknown one and a sixth live socket for a key get the documented error strings
(then a close). The vendor's pages spell the key two ways, and so does the simulator: `spelling`
"apiKey" (the WebSocket page: `apiKey required`, `Invalid apiKey format`, `subscriptionId`) or
"api_key" (the API reference: `api_key required`, `Invalid api_key format`, `subscription_id`);
it takes the key under either name unless `strict` (then only under its own). `errors_as` sends the
errors as a JSON object (`{"type":"error","message":…}`), a JSON string, or plain text.
`subscribed` echoes the channels the key may have. `ping` → `pong`; `heartbeat`
every `heartbeat_s`; `unsubscribe` stops the broadcasts. Orders go PENDING_PLACEMENT → PLACED →
FILLED at the market model's prices (fixture and outcome ids shared with the OddsPapi simulator),
each fill followed by a hedge bet at the bookmaker whose price the order took, and an account
update; goals give score broadcasts; the emergency flag flips now and then. `script` frames are
sent verbatim after `subscribed` (seed examples in tests).

The REST twin, on the same port (simulate/rest.py), serves the rows the broadcasts built:
/api/v1/orders and /api/v1/bets (`fromDate`/`toDate` on each object's `updatedAt`, `page`/`pageSize`),
/api/v1/accounts, with `X-API-Key`; a budget of calls per minute per key (429 with Retry-After);
REST faults (5xx, slow answers, a refused key). Orders also trade while nobody listens (`trade`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from warehouse.simulate.market import OUTCOMES, Market, PriceChange, ScoreUpdate
from warehouse.simulate.rest import RestFaults, RestLog, answer, faulted, too_many
from warehouse.simulate.vendors import FleetMember, Vendor
from warehouse.simulate.wsserver import WebSocketSimulator

PATH = "/ws/subscribe"
REST = {"/api/v1/orders": ("orders", "orderId"), "/api/v1/bets": ("bets", "betId"),
        "/api/v1/accounts": ("accounts", "accountId")}  # path → (channel, id field)
MAX_PAGE_SIZE = 2000
CHANNELS = ("orders", "bets", "accounts", "scores", "emergency")
SPELLINGS = ("apiKey", "api_key")  # the WebSocket page's, the API reference's
ERRORS_AS = ("object", "string", "text")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


class MmSimulator(WebSocketSimulator):
    def __init__(self, keys: dict[str, Sequence[str]], *, seed: int = 1, rate: float = 20.0,
                 heartbeat_s: float = 60.0, auth_timeout_s: float = 30.0, max_per_key: int = 5,
                 script: Sequence[bytes | str] = (), drop_after: int | None = None,
                 silent_after: int | None = None, malformed_every: int | None = None,
                 market: Market | None = None, rest_faults: RestFaults | None = None,
                 rest_per_minute: int | None = None, spelling: str = "apiKey", strict: bool = False,
                 errors_as: str = "object") -> None:
        if spelling not in SPELLINGS or errors_as not in ERRORS_AS:
            raise ValueError(f"spelling is one of {SPELLINGS}, errors_as one of {ERRORS_AS}")
        self.spelling, self.strict, self.errors_as = spelling, strict, errors_as
        self.keys = {k: tuple(v) for k, v in keys.items()}  # key → channels it may subscribe to
        self.rate, self.heartbeat_s = rate, heartbeat_s
        self.auth_timeout_s, self.max_per_key = auth_timeout_s, max_per_key
        self.script = [s.encode() if isinstance(s, str) else s for s in script]
        self.drop_after = drop_after  # abort the TCP connection after this many broadcasts
        self.silent_after = silent_after  # send nothing more (no heartbeat, no pong) after this many
        self.malformed_every = malformed_every  # every n-th broadcast is cut short (not JSON)
        self.market = market or Market(seed=seed)
        self.received: list[list[dict[str, Any]]] = []  # per connection, every client message
        self.errors: list[str] = []
        self.live: Counter[str] = Counter()
        self._next_order = 100
        self._scores: dict[str, tuple[int, int]] = {}  # fixture → score last broadcast
        self._subscription = 0
        # The vendor's rows, as the broadcasts left them (REST twin): channel → id → object with updatedAt.
        self.rows: dict[str, dict[str, dict[str, Any]]] = {"orders": {}, "bets": {}, "accounts": {}}
        self.rest_faults = rest_faults or RestFaults()
        self.rest = RestLog()
        self.rest_per_minute = rest_per_minute  # the vendor's budget per key (None: no limit)
        self._rest_times: dict[str, deque[float]] = {}
        self._live: set[ServerConnection] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        return await self._listen(host, port, PATH)

    def _check(self, connection: ServerConnection, request: Request) -> Any:
        parts = urlsplit(request.path)
        if parts.path in REST:
            return self._rest(connection, parts.path, dict(parse_qsl(parts.query)), request.headers)
        if request.path.split("?")[0] != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return connection.respond(HTTPStatus.UPGRADE_REQUIRED, '{"detail":"Upgrade Required"}\n')
        return None

    def drop_connections(self) -> int:
        """Abort every open connection (a network blip); how many there were."""
        live = list(self._live)
        for ws in live:
            ws.transport.abort()
        return len(live)

    def trade(self, fixture_id: str | None = None) -> int:
        """An order placed, filled and hedged while nobody listens: the rows change, nothing is
        broadcast. Returns the order id."""
        fixture = next((f for f in self.market.fixtures if f.fixture_id == fixture_id), self.market.fixtures[0])
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        quote = self.market.quote(fixture, "pinnacle")
        for message in self._order_lifecycle(fixture.fixture_id, "pinnacle", quote, now):
            self._remember(message)
        return self._next_order

    async def _handle(self, ws: ServerConnection) -> None:
        self._live.add(ws)
        try:
            await self._serve(ws)
        finally:
            self._live.discard(ws)

    async def _serve(self, ws: ServerConnection) -> None:
        messages: list[dict[str, Any]] = []
        self.received.append(messages)
        key = None
        try:
            subscribe = orjson.loads(await asyncio.wait_for(ws.recv(), self.auth_timeout_s))
            messages.append(subscribe)
            key = await self._authorise(ws, subscribe)
            if key is None:
                return
            granted = [c for c in subscribe.get("channels") or CHANNELS if c in self.keys[key]]
            self._subscription += 1
            subscription = "subscriptionId" if self.spelling == "apiKey" else "subscription_id"
            await self._send(ws, orjson.dumps({"type": "subscribed", subscription: self._subscription,
                                               "channels": granted}).decode())
            state = {"on": True}
            broadcaster = asyncio.create_task(self._broadcast(ws, granted, state))
            try:
                async for text in ws:
                    message = orjson.loads(text)
                    messages.append(message)
                    if message.get("type") == "ping" and not state.get("silent"):
                        await self._send(ws, '{"type":"pong"}')
                    elif message.get("type") == "unsubscribe":
                        state["on"] = False
            finally:
                broadcaster.cancel()
        except TimeoutError:
            await ws.close(1008, "subscribe timeout")
        except Exception:
            pass
        finally:
            if key is not None:
                self.live[key] -= 1

    async def _authorise(self, ws: ServerConnection, subscribe: dict[str, Any]) -> str | None:
        fields = (self.spelling,) if self.strict else SPELLINGS
        key = next((subscribe[f] for f in fields if subscribe.get(f)), None)
        error = None
        if not key:
            error = f"{self.spelling} required"
        elif not _UUID.match(str(key)):
            error = f"Invalid {self.spelling} format"
        elif key not in self.keys:
            error = "Invalid API key"
        elif self.live[key] >= self.max_per_key:
            error = "Connection limit exceeded"
        if error:
            self.errors.append(error)
            frame = {"object": orjson.dumps({"type": "error", "message": error}).decode(),
                     "string": orjson.dumps(error).decode(), "text": error}[self.errors_as]
            await self._send(ws, frame)
            await ws.close(1008, error)
            return None
        self.live[str(key)] += 1
        return str(key)

    async def _broadcast(self, ws: ServerConnection, channels: list[str], state: dict[str, bool]) -> None:
        loop = asyncio.get_running_loop()
        last_heartbeat = loop.time()
        sent = 0
        with contextlib.suppress(Exception):
            for scripted in self.script:
                await self._send(ws, scripted.decode())
            while True:
                await asyncio.sleep(1 / self.rate)
                if self.silent_after is not None and sent >= self.silent_after:
                    state["silent"] = True
                    continue
                if loop.time() - last_heartbeat >= self.heartbeat_s:
                    await self._send(ws, '{"type":"heartbeat"}')
                    last_heartbeat = loop.time()
                if self.script or not state["on"]:
                    continue
                for message in self._next(channels):
                    if self.drop_after is not None and sent >= self.drop_after:
                        ws.transport.abort()
                        return
                    frame = orjson.dumps(message).decode()
                    sent += 1
                    if self.malformed_every and sent % self.malformed_every == 0:
                        frame = frame[: len(frame) // 2]
                    await self._send(ws, frame)

    def _next(self, channels: list[str]) -> list[dict[str, Any]]:
        change = self.market.step()
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        out: list[dict[str, Any]] = []
        fixture = change.fixture
        score = (fixture.home_score, fixture.away_score)
        # Kick-off, goals and full time; a goal another feed's step found first goes with this
        # fixture's next change.
        if isinstance(change, ScoreUpdate) or (fixture.status_id and self._scores.get(fixture.fixture_id) != score):
            if len(self._scores) > 2 * len(self.market.fixtures):  # a simulator runs for days
                current = {f.fixture_id for f in self.market.fixtures}
                self._scores = {k: v for k, v in self._scores.items() if k in current}
            self._scores[fixture.fixture_id] = score
            out.append(_cast("scores", "UPDATE", {"fixtureId": fixture.fixture_id, "live": fixture.status_id == 1,
                                                  "statusId": fixture.status_id,
                                                  "currentPeriod": "上半场" if fixture.minute <= 45 else "下半场",
                                                  "currentMinute": fixture.minute,
                                                  "scores": {"home": fixture.home_score,
                                                             "away": fixture.away_score}}))
        elif isinstance(change, PriceChange) and change.active and self.market.rng.random() < 0.2:
            out += self._order_lifecycle(fixture.fixture_id, change.bookmaker, change.prices, now)
        if self.market.rng.random() < 0.01:
            flag = self.market.rng.random() < 0.5
            out.append(_cast("emergency", "UPDATE", {"emergency": flag, "reason": "手动触发" if flag else "恢复",
                                                     "triggeredAt": now}))
        for message in out:
            self._remember(message)
        return [m for m in out if m["channel"] in channels]

    # -- the vendor's rows (REST twin) -------------------------------------------------------------

    def _remember(self, message: dict[str, Any]) -> None:
        """Apply one change to the rows: INSERT creates, UPDATE overlays the keys present."""
        rows = self.rows.get(message["channel"])
        if rows is None:
            return
        payload = message["payload"]
        row_id = str(payload.get({"orders": "orderId", "bets": "betId", "accounts": "accountId"}[message["channel"]]))
        row = rows[row_id] = {**rows.get(row_id, {}), **payload} if message["event"] == "UPDATE" else dict(payload)
        row["updatedAt"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    async def _rest(self, connection: ServerConnection, path: str, params: dict[str, str], headers: Any) -> Response:
        status, response = await self._rest_answer(connection, path, params, headers)
        self.rest.calls.append((path, params, status))
        return response

    async def _rest_answer(self, connection: ServerConnection, path: str, params: dict[str, str],
                           headers: Any) -> tuple[int, Response]:
        key = headers.get("X-API-Key")
        if not key:
            return 401, answer(connection, 401, {"detail": "Not authenticated"})
        if self.rest_faults.reject_key or key not in self.keys:
            return 401, answer(connection, 401, {"detail": "Invalid API key"})
        if self.rest_per_minute is not None:
            times = self._rest_times.setdefault(key, deque())
            now = time.monotonic()
            while times and times[0] <= now - 60:
                times.popleft()
            if len(times) >= self.rest_per_minute:
                return 429, too_many(connection, times[0] + 60 - now, {"detail": "Rate limit exceeded"})
            times.append(now)
        failed = await faulted(connection, self.rest_faults)
        if failed is not None:
            return failed.status_code, failed
        channel, id_field = REST[path]
        rows = sorted(self.rows[channel].values(), key=lambda r: (r["updatedAt"], str(r.get(id_field))))
        if channel == "accounts":
            return 200, answer(connection, 200, rows)
        try:
            since = _when(params.get("fromDate"))
            until = _when(params.get("toDate"))
            page, size = int(params.get("page", "1")), int(params.get("pageSize", "100"))
            if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
                raise ValueError("page >= 1 and 1 <= pageSize <= 2000")
        except ValueError as exc:
            invalid = [{"loc": ["query"], "msg": str(exc), "type": "value_error"}]
            return 422, answer(connection, 422, {"detail": invalid})
        chosen = [r for r in rows if (since is None or datetime.fromisoformat(r["updatedAt"]) >= since)
                  and (until is None or datetime.fromisoformat(r["updatedAt"]) <= until)]
        return 200, answer(connection, 200, chosen[(page - 1) * size: page * size])

    def _order_lifecycle(self, fixture_id: str, bookmaker: str, prices: dict[str, float],
                         now: str) -> list[dict[str, Any]]:
        """An exchange order placed at the bookmaker's implied probability, filled, then hedged at that
        bookmaker, at its price (the fixture and outcome ids are OddsPapi's, as the vendor's are)."""
        self._next_order += 1
        order = self._next_order
        outcome = self.market.rng.choice(OUTCOMES)
        cents = max(0.01, round(1 / prices[outcome], 2))  # an exchange's least price: a long shot is not free
        stake = float(self.market.rng.choice((50, 100, 250)))
        base = {"orderId": order, "fixtureId": fixture_id, "outcomeId": int(outcome), "exchange": "polymarket",
                "exchangeOrderId": f"0x{order:08x}", "orderCents": cents, "orderStake": stake,
                "settlementStatus": "UNDECIDED", "createdAt": now}
        return [
            _cast("orders", "INSERT", {**base, "orderStatus": "PENDING_PLACEMENT", "matchedStatus": "NOT_MATCHED",
                                       "matchedStake": 0}),
            _cast("orders", "UPDATE", {"orderId": order, "orderStatus": "PLACED"},
                  {"orderStatus": "PENDING_PLACEMENT"}),
            _cast("orders", "UPDATE", {**base, "orderStatus": "FILLED", "matchedStatus": "FULLY_MATCHED",
                                       "matchedStake": stake, "matchedAt": now},
                  {"orderStatus": "PLACED", "matchedStatus": "NOT_MATCHED", "matchedStake": 0}),
            _cast("bets", "INSERT", {"betId": order * 10, "orderId": order, "client": "sim", "bookmaker": bookmaker,
                                     "placedPrice": prices[outcome], "placedStake": stake, "betStatus": "placed",
                                     "sentData": {"price": prices[outcome], "amount": stake},
                                     "receivedData": {"betId": str(order * 10), "status": "U"}, "placedAt": now}),
            _cast("accounts", "UPDATE", {"accountId": "polymarket-main", "balance": 10_000 - stake},
                  {"balance": 10_000}),
        ]


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _cast(channel: str, event: str, payload: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    message = {"type": "broadcast", "channel": channel, "event": event, "payload": payload}
    if old is not None:
        message["old"] = old
    return message


_FLEET_KEY = "0d7e3c1a-5b6f-4c2d-9e8f-123456789abc"


def _member(market: Market, rate: float, faults: bool) -> FleetMember:
    simulator = MmSimulator({_FLEET_KEY: CHANNELS}, rate=rate, heartbeat_s=5, market=market,
                            drop_after=60 if faults else None, malformed_every=19 if faults else None)
    return FleetMember(simulator, lambda url: {"url": url, "api_key_env": "FLEET_MM_KEY",
                                               "rest_url": url.removesuffix(PATH)})  # its REST twin


VENDOR = Vendor(kind="mm-ws", name="mm", rate=20, env={"FLEET_MM_KEY": _FLEET_KEY}, member=_member,
                from_feed=lambda options, secrets, market: MmSimulator({secrets["api_key_env"]: CHANNELS},
                                                                       market=market),
                faults_doc="drops the connection after 60 broadcasts; every 19th is cut short")
