"""The firehose's vendor and its sink: pre-built frames pushed as fast as a socket takes them.

`bench/firehose.py` runs `serve` in a process of its own. It builds every frame of the run before
it listens (no market model, no JSON while it sends: a vendor renders its frames on its own
machines), already framed for the wire (a WebSocket text frame, unmasked and uncompressed as a
server sends it, or an SSE event), in one buffer. Sending is then a slice of that buffer per
socket write, at the pace the socket takes it (flow control), or paced at `rate` frames/s. The
handshake is as little of each vendor's protocol as `warehouse collect` needs to be accepted:

- oddspapi: WebSocket, the key in the query; frames start at once.
- saba: HTTP GET answered 200 `text/event-stream`; a status-1 snapshot, then status-0 deltas.
- ckex: WebSocket; frames start after the `start` command and a subscription.
- mm: WebSocket; the `subscribe` message is answered `subscribed`, then broadcasts.

Every frame is distinct (its own time, order, id or prices), so "each frame stored exactly once"
can be checked in the database. `sink` reads the same frames and only counts them: the ceiling a
Python client of this peer reaches on this machine, in the same run.

It is the vendor, not the product: of `warehouse` it takes only Saba's odds formats, from the
simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve

from warehouse.simulate.saba import odds_formats as saba_odds  # the vendor's six odds formats, in one place

FEEDS = ("oddspapi", "saba", "ckex", "mm")
BOOKMAKERS = ("pinnacle", "bet365", "stake", "22bet", "starcasino.be", "betfair-ex")
FIXTURES = 400  # fixtures (events, markets) the frames cycle through
CKEX_SUBSCRIPTIONS = [f"order-slip-quote@chloe-market#{41115853 + i}-e@1_{31260330 + i}" for i in range(20)] + [
    f"order-slip-quote@fancy-market#{41115853 + i}-e@878_{55854706 + i}_f" for i in range(20)]
MM_CHANNELS = ["orders", "bets", "accounts", "scores", "emergency"]
SABA_FIRST_ID = 81722  # the SSE id of the snapshot; deltas count on from it
CHUNK_BYTES = 256 * 1024  # a socket write in the firehose
PACE_S = 0.001  # a paced peer wakes at most this often (frames due meanwhile go together)


# -- frames -----------------------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def oddspapi_frames(rng: random.Random, start: datetime) -> Iterator[bytes]:
    """A price change of two outcomes of the full-time 1X2, one bookmaker, one fixture: the shape
    simulate/oddspapi.py sends (outcomes_per_frame=2). `changedAt` moves on a millisecond a frame."""
    pairs = (("101", "102"), ("102", "103"), ("101", "103"))
    n = 0
    while True:
        fixture = n % FIXTURES
        book = BOOKMAKERS[(n // FIXTURES) % len(BOOKMAKERS)]
        event = 61_000_000 + fixture
        changed = (start + timedelta(milliseconds=n)).isoformat()
        outcomes = {outcome: {"players": {"0": {
            "active": True, "betslip": None, "bookmakerOutcomeId": f"{event}{outcome}", "changedAt": changed,
            "limit": 1000 if book == "pinnacle" else None, "playerName": None,
            "price": round(rng.uniform(1.05, 9.0), 2), "exchangeMeta": {}, "playerId": 0}}}
            for outcome in pairs[(n // (FIXTURES * len(BOOKMAKERS))) % len(pairs)]}
        yield orjson.dumps({"fixtureId": f"id1000000{fixture:09d}",
                            "bookmakerOdds": {book: {"markets": {"101": {"outcomes": outcomes}}}}})
        n += 1


def _saba_market(event: int, rng: random.Random) -> dict[str, Any]:
    selections = [{"key": key, "point": None, "oddsPrice": saba_odds(round(rng.uniform(1.05, 9.0), 2))}
                  for key in ("1", "x", "2")]
    return {"marketId": event * 10 + 5, "eventId": event, "betType": 5, "isLive": True, "marketStatus": "running",
            "sort": 1, "selections": selections}


def _saba_data(status: int, message: str, events_add: list[Any] | None = None,
               markets_add: list[Any] | None = None, markets_change: list[Any] | None = None) -> bytes:
    return orjson.dumps({"status": status, "message": message, "payload": {
        "events": {"add": events_add or [], "change": [], "remove": []},
        "markets": {"add": markets_add or [], "change": markets_change or [], "remove": []}}})


def saba_snapshot(rng: random.Random, start: datetime) -> bytes:
    """Status 1: the events and their FT.1X2 markets, as the stream opens."""
    events = [{"sportType": 1, "sportName": "Soccer", "leagueId": 1001, "leagueName": "Firehose League",
               "eventId": 40_000_000 + i, "eventStatus": "running", "isLive": True,
               "kickOffTime": (start - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
               "teamInfo": {"homeId": 2 * i, "homeName": f"Home {i}", "awayId": 2 * i + 1, "awayName": f"Away {i}"},
               "gameInfo": {"clockDirection": "inc", "isHt": False, "livePeriod": 1, "seconds": 1800,
                            "liveHomeScore": 0, "liveAwayScore": 0}} for i in range(FIXTURES)]
    markets = [_saba_market(40_000_000 + i, rng) for i in range(FIXTURES)]
    return _saba_data(1, "InitialData", events_add=events, markets_add=markets)


def saba_frames(rng: random.Random, start: datetime) -> Iterator[bytes]:
    """Status-0 deltas, one FT.1X2 market's three prices each: what simulate/saba.py sends for a price
    change. The SSE id (raw_messages.event_id) tells frames apart."""
    n = 0
    while True:
        yield _saba_data(0, "Success", markets_change=[_saba_market(40_000_000 + n % FIXTURES, rng)])
        n += 1


def ckex_frames(rng: random.Random, start: datetime) -> Iterator[bytes]:
    """The subscriptions in turn: a chloe market's three products (order-slip), or a fancy market's
    back/lay quote with its update time (order-slip-fancy), as simulate/ckex.py sends them."""
    n = 0
    while True:
        subscription = CKEX_SUBSCRIPTIONS[n % len(CKEX_SUBSCRIPTIONS)]
        family, _, key = subscription.partition("#")
        event, _, market = key.partition("@")
        if family.endswith("fancy-market"):
            runs = str(rng.randint(120, 260))
            item = {"mid": market, "pid": "1", "bl": runs, "bo": str(rng.randint(80, 100)), "ll": runs,
                    "lo": str(rng.randint(100, 125)), "status": "1", "ut": _iso(start + timedelta(milliseconds=n))}
            yield orjson.dumps({"type": "order-slip-fancy", "data": [item]})
        else:
            items = [{"event_id": event, "market_id": market, "product_id": str(p),
                      "price": f"{rng.uniform(1.05, 9.0):.2f}", "status": "1"} for p in (1, 2, 3)]
            yield orjson.dumps({"type": "order-slip", "data": items})
        n += 1


def mm_frames(rng: random.Random, start: datetime) -> Iterator[bytes]:
    """Orders placed, filled and hedged: five broadcasts an order (orders INSERT, two UPDATEs, a bet,
    the account's balance), as simulate/mm.py's order lifecycle sends them."""
    balance = 10_000_000.0
    order = 100
    while True:
        order += 1
        now = _iso(start + timedelta(milliseconds=order))
        outcome = rng.choice((101, 102, 103))
        price = round(rng.uniform(1.05, 9.0), 2)
        cents = round(1 / price, 2)
        stake = float(rng.choice((50, 100, 250)))
        base = {"orderId": order, "fixtureId": f"id1000000{order % FIXTURES:09d}", "outcomeId": outcome,
                "exchange": "polymarket", "exchangeOrderId": f"0x{order:08x}", "orderCents": cents,
                "orderStake": stake, "settlementStatus": "UNDECIDED", "createdAt": now}
        balance -= stake
        for channel, event, payload, old in (
            ("orders", "INSERT", {**base, "orderStatus": "PENDING_PLACEMENT", "matchedStatus": "NOT_MATCHED",
                                  "matchedStake": 0}, None),
            ("orders", "UPDATE", {"orderId": order, "orderStatus": "PLACED"}, {"orderStatus": "PENDING_PLACEMENT"}),
            ("orders", "UPDATE", {**base, "orderStatus": "FILLED", "matchedStatus": "FULLY_MATCHED",
                                  "matchedStake": stake, "matchedAt": now},
             {"orderStatus": "PLACED", "matchedStatus": "NOT_MATCHED", "matchedStake": 0}),
            ("bets", "INSERT", {"betId": order * 10, "orderId": order, "client": "firehose", "bookmaker": "pinnacle",
                                "placedPrice": price, "placedStake": stake, "betStatus": "placed",
                                "sentData": {"price": price, "amount": stake},
                                "receivedData": {"betId": str(order * 10), "status": "U"}, "placedAt": now}, None),
            ("accounts", "UPDATE", {"accountId": "polymarket-main", "balance": balance, "updatedAt": now},
             {"balance": balance + stake}),
        ):
            message = {"type": "broadcast", "channel": channel, "event": event, "payload": payload}
            if old is not None:
                message["old"] = old
            yield orjson.dumps(message)


PAYLOADS: dict[str, Callable[[random.Random, datetime], Iterator[bytes]]] = {
    "oddspapi": oddspapi_frames, "saba": saba_frames, "ckex": ckex_frames, "mm": mm_frames}


def ws_frame(payload: bytes) -> bytes:
    """A server's WebSocket text frame (FIN, no mask, no compression)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 2**16:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload


def sse_frame(event_id: int, payload: bytes) -> bytes:
    return b"id: %d\r\ndata: %s\r\n\r\n" % (event_id, payload)


@dataclass
class Script:
    """A run's frames on the wire: `wire[offsets[i]:offsets[i + 1]]` is frame i; `opening` goes first on
    every connection (Saba's snapshot; MM's `subscribed` is made per connection)."""

    wire: bytearray
    offsets: array  # type: ignore[type-arg]
    opening: bytes = b""

    @property
    def count(self) -> int:
        return len(self.offsets) - 1


def build(feed: str, count: int, seed: int = 1) -> Script:
    """`count` distinct frames of `feed`, framed for the wire."""
    rng = random.Random(seed)
    start = datetime.now(UTC).replace(microsecond=0)
    frames = PAYLOADS[feed](rng, start)
    seen: set[int] = set()
    wire = bytearray()  # grown in place: a list of frames joined at the end would hold them twice
    offsets = array("Q", [0])
    while len(offsets) <= count:
        payload = next(frames)
        digest = hash(payload)
        if digest in seen:  # a repeat (same market, same prices by chance): every frame must be distinct
            continue
        seen.add(digest)
        wire += sse_frame(SABA_FIRST_ID + len(offsets), payload) if feed == "saba" else ws_frame(payload)
        offsets.append(len(wire))
    opening = sse_frame(SABA_FIRST_ID, saba_snapshot(rng, start)) if feed == "saba" else b""
    return Script(wire, offsets, opening)


# -- the peer -----------------------------------------------------------------------------------------


@dataclass
class Armed:
    """What the next connection gets: `count` frames, as fast as the socket takes them (`rate` None)
    or `rate` a second; no more after `seconds`, if given."""

    count: int
    rate: float | None = None
    seconds: float | None = None


@dataclass
class Sending:
    """What one connection was sent: frames (opening included), and when the first and the last
    left this process for the kernel."""

    armed: bool
    frames: int = 0
    data: int = 0
    first: float = 0.0
    last: float = 0.0
    complete: bool = False
    error: str = ""


class Peer:
    def __init__(self, feed: str, script: Script, control: Connection) -> None:
        self.feed, self.script, self.control = feed, script, control
        self.armed: Armed | None = None

    def _command(self) -> None:
        message = self.control.recv()
        if message[0] == "arm":
            self.armed = Armed(**message[1])
            self.control.send(("armed",))
        elif message[0] == "stop":
            self.stopping.set()

    async def run(self, port: int) -> None:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.control.fileno(), self._command)
        if self.feed == "saba":
            server: Any = await asyncio.start_server(self._sse, "127.0.0.1", port)
        else:
            # compression=None: the collector offers permessage-deflate and is refused it, as the issue's
            # peer does (a vendor's compression would cost this machine's cores, not the vendor's).
            server = await serve(self._ws, "127.0.0.1", port, compression=None, max_size=2**20,
                                 write_limit=2**20, process_request=self._http)
        self.control.send(("ready",))
        async with server:
            await self.stopping.wait()

    def _take(self) -> Armed | None:
        armed, self.armed = self.armed, None
        return armed

    @staticmethod
    def _http(connection: ServerConnection, request: Any) -> Any:
        # A REST call (a resync of a revision that has them) is not the stream: refuse it plainly.
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return connection.respond(404, "no REST here\n")
        return None

    async def _ws(self, ws: ServerConnection) -> None:
        armed = self._take()
        sending = Sending(armed is not None)
        ready: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        reading = asyncio.create_task(self._read(ws, ready))
        try:
            channels = await asyncio.wait_for(asyncio.shield(ready), 30)
            if self.feed == "mm":
                await self._write_ws(ws, ws_frame(orjson.dumps({"type": "subscribed", "subscriptionId": 1,
                                                                "channels": channels})))
                sending.first = sending.last = time.time()
                sending.frames = 1
            if armed is not None:
                await self._push(armed, sending, lambda data: self._write_ws(ws, data), lambda: self._flush_ws(ws))
            sending.complete = True
        except Exception as exc:  # the client went away: the report says so
            sending.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._report(sending)
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        reading.cancel()

    async def _read(self, ws: ServerConnection, ready: asyncio.Future[list[str]]) -> None:
        """Read what the client sends (websockets answers its pings meanwhile). The stream starts at
        once (OddsPapi), after `start` and a subscription (CKEX), or after `subscribe` (MM)."""
        started = subscribed = False
        if self.feed == "oddspapi":
            ready.set_result([])
        with contextlib.suppress(Exception):
            async for text in ws:
                if ready.done():
                    continue
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                    message = orjson.loads(text)
                    if self.feed == "ckex":
                        command = message.get("commend", "")
                        started = started or command == "start"
                        subscribed = subscribed or command.startswith("order-slip-quote@")
                        if started and subscribed:
                            ready.set_result([])
                    elif self.feed == "mm" and message.get("type") == "subscribe":
                        ready.set_result(list(message.get("channels") or MM_CHANNELS))

    @staticmethod
    async def _write_ws(ws: ServerConnection, data: memoryview | bytes) -> None:
        async with ws.send_context():  # checks the connection is open; waits for the buffer to drain
            ws.transport.write(data)

    @staticmethod
    async def _flush_ws(ws: ServerConnection) -> None:
        """Until the last byte is in the kernel: what "the peer's last send" means."""
        ws.transport.set_write_buffer_limits(0, 0)
        async with ws.send_context():
            pass

    async def _sse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        armed = self._take()
        sending = Sending(armed is not None)
        try:
            while (await reader.readline()).strip():  # the request line and headers: any GET is the stream
                pass
            writer.transport.set_write_buffer_limits(2**20)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                         b"Connection: close\r\n\r\n" + self.script.opening)
            await writer.drain()
            sending.first = sending.last = time.time()
            sending.frames = 1

            async def write(data: memoryview | bytes) -> None:
                writer.write(data)
                await writer.drain()

            async def flush() -> None:
                writer.transport.set_write_buffer_limits(0, 0)
                await writer.drain()

            if armed is not None:
                await self._push(armed, sending, write, flush)
            sending.complete = True
        except Exception as exc:
            sending.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._report(sending)
        with contextlib.suppress(Exception):
            while await reader.read(65536):  # until the client hangs up
                pass
        writer.close()

    async def _push(self, armed: Armed, sending: Sending, write: Callable[[memoryview], Any],
                    flush: Callable[[], Any]) -> None:
        """Frames 0..count-1 of the script: in chunks of CHUNK_BYTES as the socket takes them, or those
        due at `rate` a second every millisecond."""
        script, view = self.script, memoryview(self.script.wire)
        offsets, count = script.offsets, min(armed.count, script.count)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + armed.seconds if armed.seconds else float("inf")
        sent = 0
        sending.first = sending.first or time.time()
        while sent < count and loop.time() < deadline:
            if armed.rate:
                due = min(count, int((loop.time() - started) * armed.rate) + 1)
                if due <= sent:
                    await asyncio.sleep(max(PACE_S, started + sent / armed.rate - loop.time()))
                    continue
                upto = due
            else:
                # as many whole frames as fit in a chunk (at least one)
                upto = max(sent + 1, min(count, bisect_right(offsets, offsets[sent] + CHUNK_BYTES, sent) - 1))
            await write(view[offsets[sent]:offsets[upto]])
            sending.frames += upto - sent
            sending.data += upto - sent
            sent = upto
        await flush()
        sending.last = time.time()

    def _report(self, sending: Sending) -> None:
        self.control.send(("sent", sending.__dict__))


def serve_peer(feed: str, count: int, port: int, control: Connection) -> None:
    """The peer process: build the frames, listen, serve until told to stop."""
    script = build(feed, count)
    asyncio.run(Peer(feed, script, control).run(port))


# -- the sink -----------------------------------------------------------------------------------------


def sink(feed: str, url: str, expected: int, control: Connection) -> None:
    """The sink process: read `expected` frames and count them; report when 1 %, 2 %, … had come."""
    asyncio.run(_sink(feed, url, expected, control))


async def _sink(feed: str, url: str, expected: int, control: Connection) -> None:
    marks: list[float] = []
    step = max(1, expected // 100)
    count = 0
    if feed == "saba":
        import httpx

        async with httpx.AsyncClient(timeout=None) as client, client.stream(
                "GET", url, headers={"Accept": "text/event-stream"}) as response:
            tail = b""
            async for chunk in response.aiter_raw():
                found = (tail + chunk).count(b"\r\n\r\n")  # an event ends with an empty line
                tail = chunk[-3:]
                for _ in range(found):
                    count += 1
                    if count % step == 0:
                        marks.append(time.time())
                if count >= expected:
                    break
    else:
        from websockets.asyncio.client import connect

        # The collector's own options: it offers permessage-deflate (refused), takes large frames.
        async with connect(url, compression="deflate", max_size=64 * 2**20) as ws:
            if feed == "ckex":
                for command in ["start", *CKEX_SUBSCRIPTIONS]:
                    await ws.send(orjson.dumps({"commend": command}).decode())
            elif feed == "mm":
                await ws.send(orjson.dumps({"type": "subscribe", "apiKey": "firehose", "channels": MM_CHANNELS}))
            while count < expected:
                await ws.recv(decode=False)
                count += 1
                if count % step == 0:
                    marks.append(time.time())
    control.send({"frames": count, "marks": marks, "step": step, "last": time.time()})
