"""A local Acme Odds server (the worked example of docs/adding-a-feed.md): gzip frames over WebSocket.

Path /feed with `token=`; a wrong token gets HTTP 401. Every market change becomes one gzip frame
per outcome; a heartbeat every `heartbeat_s`. Faults: drop the connection after so many frames,
cut every n-th frame short (not valid gzip).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from warehouse.simulate.market import Market, PriceChange
from warehouse.simulate.vendors import FleetMember, Vendor
from warehouse.simulate.wsserver import WebSocketSimulator

PATH = "/feed"


class AcmeSimulator(WebSocketSimulator):
    def __init__(self, token: str, *, market: Market | None = None, rate: float = 20.0, heartbeat_s: float = 10.0,
                 drop_after: int | None = None, malformed_every: int | None = None) -> None:
        self.token, self.rate, self.heartbeat_s = token, rate, heartbeat_s
        self.market = market or Market()
        self.drop_after, self.malformed_every = drop_after, malformed_every

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        return await self._listen(host, port, PATH)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if parse_qs(parts.query).get("token", [""])[0] != self.token:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        last_heartbeat, sent = loop.time(), 0
        with contextlib.suppress(Exception):
            while True:
                await asyncio.sleep(1 / self.rate)
                if loop.time() - last_heartbeat >= self.heartbeat_s:
                    await self._send(ws, gzip.compress(b'{"type":"heartbeat"}'))
                    last_heartbeat = loop.time()
                change = self.market.step()
                if not isinstance(change, PriceChange):
                    continue
                for selection, price in change.prices.items():
                    if self.drop_after is not None and sent >= self.drop_after:
                        ws.transport.abort()
                        return
                    frame = gzip.compress(orjson.dumps({
                        "type": "price", "fixture": change.fixture.fixture_id, "market": "1x2",
                        "selection": selection, "price": price, "active": change.active,
                        "ts": datetime.now(UTC).isoformat()}))
                    sent += 1
                    if self.malformed_every and sent % self.malformed_every == 0:
                        frame = frame[: len(frame) // 2]
                    await self._send(ws, frame)


_FLEET_TOKEN = "acme-fleet-token-7c41"


def _member(market: Market, rate: float, faults: bool) -> FleetMember:
    simulator = AcmeSimulator(_FLEET_TOKEN, market=market, rate=rate, heartbeat_s=2,
                              drop_after=80 if faults else None, malformed_every=23 if faults else None)
    return FleetMember(simulator, lambda url: {"url": url, "token_env": "FLEET_ACME_TOKEN"})


def _from_feed(options: Any, secrets: Mapping[str, str], market: Market) -> AcmeSimulator:
    return AcmeSimulator(secrets["token_env"], market=market)


VENDOR = Vendor(kind="acme-gzip-ws", name="acme", rate=20, env={"FLEET_ACME_TOKEN": _FLEET_TOKEN}, member=_member,
                from_feed=_from_feed, faults_doc="drops the connection after 80 frames; every 23rd is cut short")
