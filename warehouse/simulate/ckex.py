"""A local CKEX interact ws server, faithful to the vendor's documented protocol.

Path `/{stage}/quote/do-not-look-back` with `authorization=bearer <token>`; a missing or wrong
token is refused with HTTP 401. Commands are `{"commend": …}` (a wrong key or grammar gets a
`{"type":"error"}` frame); `start`/`stop` resume and pause quotes; subscriptions live
`ttl_s` (an hour by default) unless renewed; `unsubscribe-order-slip-quote#E@M` removes either
family. Quotes are strings, locked ones carry "0" odds and status "-3"; `alive` every `alive_s`.
`script` frames are sent verbatim after the first subscription (the seed examples in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from warehouse.simulate.market import Fixture, Market
from warehouse.simulate.vendors import FleetMember, Vendor
from warehouse.simulate.wsserver import WebSocketSimulator

PATH = "/quote/do-not-look-back"
_SUBSCRIBE = ("order-slip-quote@chloe-market#", "order-slip-quote@fancy-market#")
_UNSUBSCRIBE = "unsubscribe-order-slip-quote#"


@dataclass
class CkexFaults:
    drop_after: int | None = None  # abort the TCP connection after this many quote frames
    silent_after: int | None = None  # send nothing more (not even `alive`) after this many quote frames
    malformed_every: int | None = None  # every n-th quote frame is cut short (not JSON)
    empty_frames: bool = False  # also send `{}` frames, as a sibling CKEX socket does
    reject_all_tokens: bool = False


class CkexSimulator(WebSocketSimulator):
    def __init__(self, token: str, *, seed: int = 1, rate: float = 20.0, alive_s: float = 5.0, ttl_s: float = 3600.0,
                 script: Sequence[bytes | str] = (), faults: CkexFaults | None = None,
                 market: Market | None = None) -> None:
        self.token, self.rate, self.alive_s, self.ttl_s = token, rate, alive_s, ttl_s
        self.script = [s.encode() if isinstance(s, str) else s for s in script]
        self.faults = faults or CkexFaults()
        self.market = market or Market(seed=seed)
        self.commands: list[list[str]] = []  # per connection, every command received, in order
        self.refused = 0
        self._slots: dict[tuple[str, str], int] = {}  # (event, market) of a subscription → its place in the market

    async def start(self, host: str = "127.0.0.1", port: int = 0, stage: str = "dev-f") -> str:
        return await self._listen(host, port, f"/{stage}{PATH}")

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if not parts.path.endswith(PATH):
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        auth = parse_qs(parts.query).get("authorization", [""])[0]
        if self.faults.reject_all_tokens or auth != f"bearer {self.token}":
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        commands: list[str] = []
        self.commands.append(commands)
        subscriptions: dict[str, float] = {}  # "E@M" (with its family) → expiry
        state = {"running": False, "sent": 0, "scripted": False}
        pusher = asyncio.create_task(self._push(ws, subscriptions, state))
        try:
            async for text in ws:
                try:
                    command = orjson.loads(text)["commend"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    problem = {"type": "error", "error": "bad command: expected {\"commend\": …}"}
                    await self._send(ws, orjson.dumps(problem).decode())
                    continue
                commands.append(command)
                if command == "start":
                    state["running"] = True
                elif command == "stop":
                    state["running"] = False
                elif command.startswith(_SUBSCRIBE) and command.count("@") >= 2:
                    subscriptions[command] = time.monotonic() + self.ttl_s  # idempotent: renews
                elif command.startswith(_UNSUBSCRIBE):
                    key = command.removeprefix(_UNSUBSCRIBE)
                    for subscription in [s for s in subscriptions if s.split("#", 1)[1] == key]:
                        del subscriptions[subscription]
                else:
                    problem = {"type": "error", "error": f"unknown command {command!r}"}
                    await self._send(ws, orjson.dumps(problem).decode())
        except Exception:
            pass
        finally:
            pusher.cancel()

    async def _push(self, ws: ServerConnection, subscriptions: dict[str, float], state: dict[str, Any]) -> None:
        last_alive = time.monotonic()
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(1 / self.rate)
                faults = self.faults
                if faults.silent_after is not None and state["sent"] >= faults.silent_after:
                    continue
                now = time.monotonic()
                if now - last_alive >= self.alive_s:
                    await self._send(ws, '{"type":"alive"}')
                    if faults.empty_frames:
                        await self._send(ws, "{}")
                    last_alive = now
                for expired in [s for s, until in subscriptions.items() if until < now]:
                    del subscriptions[expired]
                if not state["running"] or not subscriptions:
                    continue
                if self.script:
                    if not state["scripted"]:
                        state["scripted"] = True
                        for scripted in self.script:
                            await self._send(ws, scripted.decode())
                    continue
                if self.faults.drop_after is not None and state["sent"] >= self.faults.drop_after:
                    ws.transport.abort()
                    return
                frame = self._quote(sorted(subscriptions)[state["sent"] % len(subscriptions)])
                state["sent"] += 1
                if faults.malformed_every and state["sent"] % faults.malformed_every == 0:
                    frame = frame[: len(frame) // 2]
                await self._send(ws, frame)

    def _fixture(self, event: str, market: str) -> Fixture:
        """The match a subscription shows: the fixture whose event id it names (the fleet's), else one
        chosen by its market id; it keeps that place in the market when a new match replaces it."""
        slot = self._slots.get((event, market))
        if slot is None:
            by_event = [f.index for f in self.market.fixtures if f"{f.event_id}-e" == event]
            slot = by_event[0] if by_event else zlib.crc32(market.encode()) % len(self.market.fixtures)
            if len(self._slots) > 1000:  # subscriptions come and go on a connection that lives for days
                self._slots.clear()
            self._slots[(event, market)] = slot
        return self.market.fixtures[slot]

    def _quote(self, subscription: str) -> str:
        family, _, key = subscription.partition("#")
        event, _, market = key.partition("@")
        fixture = self._fixture(event, market)
        self.market.step()  # the market moves on, whichever feed shows it
        prices = self.market.quote(fixture, "ckex")
        locked = not self.market.is_open(fixture, "ckex")
        if family.endswith("fancy-market"):
            runs = str(150 + fixture.minute)
            item = {"mid": market, "pid": "1", "bl": runs, "bo": "0" if locked else "100",
                    "ll": runs, "lo": "0" if locked else "110", "status": "-3" if locked else "1",
                    "ut": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
            return orjson.dumps({"type": "order-slip-fancy", "data": [item]}).decode()
        items = [{"event_id": event, "market_id": market, "product_id": str(n), "price": f"{price:.2f}",
                  "status": "-3" if locked else "1"} for n, price in enumerate(prices.values(), 1)]
        return orjson.dumps({"type": "order-slip", "data": items}).decode()


_FLEET_TOKEN = "eyJhbGciOiJIUzI1NiJ9.fleet-ckex"


def fleet_subscriptions(market: Market) -> list[str]:
    """A match-odds and a fancy market on the market's first two fixtures (ids of this run)."""
    first, second = market.fixtures[0], market.fixtures[1 % len(market.fixtures)]
    return [f"order-slip-quote@chloe-market#{first.event_id}-e@1_{first.event_id % 10**8}",
            f"order-slip-quote@fancy-market#{second.event_id}-e@878_{second.event_id % 10**8}_f"]


def _member(market: Market, rate: float, faults: bool) -> FleetMember:
    simulator = CkexSimulator(_FLEET_TOKEN, rate=rate, alive_s=2, market=market,
                              faults=CkexFaults(drop_after=60, malformed_every=17) if faults else None)
    subscriptions = fleet_subscriptions(market)  # once: matches end and are replaced, a config stays
    return FleetMember(simulator, lambda url: {"url": url, "token_env": "FLEET_CKEX_TOKEN",
                                               "subscriptions": subscriptions})


VENDOR = Vendor(kind="ckex-ws", name="ckex", rate=20, env={"FLEET_CKEX_TOKEN": _FLEET_TOKEN}, member=_member,
                from_feed=lambda options, secrets, market: CkexSimulator(secrets["token_env"], market=market),
                faults_doc="drops the connection after 60 quotes; every 17th is cut short")
