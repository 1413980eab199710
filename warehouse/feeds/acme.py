"""Acme Odds (`kind = "acme-gzip-ws"`): a made-up vendor whose WebSocket frames arrive gzip-compressed.

The worked example of docs/adding-a-feed.md. The token goes in the query (`?token=…`); every frame
is one binary WebSocket message holding gzip-compressed JSON: `{"type": "price", "fixture": …,
"market": …, "selection": …, "price": 2.1, "active": true, "ts": "…Z"}` or `{"type": "heartbeat"}`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from warehouse.feeds.contract import HEARTBEAT, ConnectSpec, Feed, FrameError, Output
from warehouse.feeds.values import obj, parse_time, to_bool, to_float, to_text
from warehouse.options import setting
from warehouse.records import PriceTick

BOOKMAKER = "acme"


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the stream endpoint, e.g. wss://stream.acme.example/feed")
    token_env: str = setting("environment variable holding the access token", secret=True)


class Acme(Feed[Options]):
    kind = "acme-gzip-ws"
    version = "1"
    options = Options
    default_silence_s = 30.0  # a heartbeat every 10 s
    doc = "Acme Odds: gzip-compressed JSON frames over WebSocket (the worked example)"

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        separator = "&" if "?" in options.url else "?"
        return ConnectSpec(transport="ws", url=options.url + separator + urlencode({"token": secrets["token_env"]}))

    def decode(self, data: bytes, limit: int) -> bytes:
        """gzip → JSON text, never more than `limit` + 1 bytes of it (a decompression bomb stops there)."""
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            text = inflater.decompress(data, limit + 1)
        except zlib.error as exc:
            raise FrameError(f"not gzip: {exc}") from None
        if not inflater.eof and len(text) <= limit:
            raise FrameError("gzip stream cut short")
        return text

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source)


class Adapter:
    def __init__(self, source: str) -> None:
        self.source = source

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = obj(message, "message")
        message_type = msg.get("type")
        if message_type == "heartbeat":
            return Output("heartbeat", control=HEARTBEAT)
        if message_type != "price":
            raise FrameError(f"unknown type {message_type!r}")
        fixture, market, selection = (to_text(msg.get(key)) for key in ("fixture", "market", "selection"))
        if not (fixture and market and selection):
            raise FrameError("fixture, market and selection are required")
        attrs = {k: v for k, v in msg.items() if k not in ("type", "fixture", "market", "selection", "price",
                                                              "active", "ts")}
        return Output("price", [PriceTick(received_at, self.source, BOOKMAKER, fixture, market, selection,
                                          price=to_float(msg.get("price")), active=to_bool(msg.get("active")),
                                          source_ts=parse_time(msg.get("ts")), attrs=attrs or None)])


FEED = Acme()
