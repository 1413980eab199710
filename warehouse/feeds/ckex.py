"""CKEX interact WebSocket (`kind = "ckex-ws"`): order-slip quotes for subscribed markets.

The token goes in the query as `authorization=bearer <JWT>`. Commands are JSON with the vendor's
own key spelling `commend`: `start`, then one subscribe per market; a subscription lives "at least
one hour", so the runtime re-sends every subscribe well before that. All values the server sends
are strings. See shared/protocols/ckex-interact-ws.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from warehouse.feeds.base import (
    ERROR,
    HEARTBEAT,
    ConnectSpec,
    FrameError,
    Output,
    obj,
    parse_time,
    to_decimal,
    to_float,
    to_text,
)
from warehouse.records import PriceTick, Record

KIND = "ckex-ws"
OPTIONS: dict[str, tuple[type, bool]] = {
    "url": (str, True),
    "token_env": (str, True),
    "subscriptions": (list, True),  # the vendor's own command strings
    "resubscribe_s": ((int, float), False),  # default 1800: well inside the ≥1 h subscription life
}
SECRET_OPTIONS = ("token_env",)
DEFAULT_SILENCE_S = 60.0  # the server sends `alive`
BOOKMAKER = "ckex"
FANCY_TYPES = ("order-slip-fancy", "order-slipt-fancy")  # the page spells it both ways
_PREFIXES = ("order-slip-quote@chloe-market#", "order-slip-quote@fancy-market#")


def validate(options: dict[str, Any]) -> str | None:
    for command in options.get("subscriptions", []):
        if not isinstance(command, str) or not command.startswith(_PREFIXES) or command.count("@") < 2:
            return (f"subscription {command!r} is not 'order-slip-quote@chloe-market#EVENT@MARKET' "
                    "or 'order-slip-quote@fancy-market#EVENT@MARKET'")
    return None


def command(text: str) -> str:
    return orjson.dumps({"commend": text}).decode()


def unsubscribe(subscription: str) -> str:
    """`order-slip-quote@chloe-market#E@M` → `unsubscribe-order-slip-quote#E@M` (no family part)."""
    return command("unsubscribe-order-slip-quote#" + subscription.split("#", 1)[1])


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Commands that turn the old subscription list into the new one on a live connection."""
    before, after = old["subscriptions"], new["subscriptions"]
    return ([unsubscribe(s) for s in before if s not in after]
            + [command(s) for s in after if s not in before])


def connect(options: dict[str, Any], secrets: dict[str, str], resume_id: str | None) -> ConnectSpec:
    separator = "&" if "?" in options["url"] else "?"
    url = f"{options['url']}{separator}authorization={quote('bearer ' + secrets['token_env'], safe='')}"
    subscribes = tuple(command(s) for s in options["subscriptions"])
    every = float(options.get("resubscribe_s", 1800))
    return ConnectSpec(transport="ws", url=url, send_on_connect=(command("start"), *subscribes),
                       periodic=tuple((every, message) for message in subscribes))


def _event_of_markets(subscriptions: list[str]) -> dict[str, str]:
    """market id → event id, from `…#EVENT@MARKET` (fancy quotes often omit `eid`)."""
    mapping = {}
    for subscription in subscriptions:
        event, _, market = subscription.split("#", 1)[1].partition("@")
        mapping[market] = event
    return mapping


class Adapter:
    def __init__(self, source: str, options: dict[str, Any] | None = None) -> None:
        self.source = source
        self.event_of_market = _event_of_markets((options or {}).get("subscriptions", []))

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = obj(message, "message")
        kind = msg.get("type")
        if not msg:
            return Output(kind="empty", control=HEARTBEAT)  # `{}` keep-alives of sibling sockets
        if kind == "alive":
            return Output(kind="alive", control=HEARTBEAT)
        if kind == "error":
            return Output(kind="error", control=ERROR, detail={"error": msg.get("error")})
        items = msg.get("data") or []
        if not isinstance(items, list):
            raise FrameError(f"data: list expected, got {type(items).__name__}")
        if kind == "order-slip":
            return Output(kind=kind, records=[self._quote(received_at, obj(i, "data[]")) for i in items])
        if kind in FANCY_TYPES:
            records: list[Record] = []
            for item in items:
                records += self._fancy(received_at, obj(item, "data[]"))
            return Output(kind="order-slip-fancy", records=records)
        raise FrameError(f"unknown type {kind!r}")

    def _quote(self, at: datetime, item: dict[str, Any]) -> PriceTick:
        status = to_text(item.get("status"))
        return PriceTick(
            at, self.source, BOOKMAKER, _need(item, "event_id"), _need(item, "market_id"), _need(item, "product_id"),
            price=_price(item.get("price")), active=status == "1", status=status,
            attrs={"price": item.get("price")} | {k: v for k, v in item.items()
                                                  if k not in ("event_id", "market_id", "product_id", "price",
                                                               "status")},
        )

    def _fancy(self, at: datetime, item: dict[str, Any]) -> list[PriceTick]:
        market = _need(item, "mid")
        event = to_text(item.get("eid")) or self.event_of_market.get(market, "")
        status = to_text(item.get("status"))
        product = _need(item, "pid")
        source_ts = parse_time(item.get("ut"))
        known = ("eid", "mid", "pid", "bl", "bo", "ll", "lo", "status", "ut")
        rest = {k: v for k, v in item.items() if k not in known}
        return [
            PriceTick(at, self.source, BOOKMAKER, event, market, product, price=_price(item.get(odds)),
                      line=to_decimal(item.get(line)), side=side, active=status == "1", status=status,
                      source_ts=source_ts, attrs={"odds": item.get(odds), **rest})
            for side, line, odds in (("back", "bl", "bo"), ("lay", "ll", "lo"))
        ]


def _need(item: dict[str, Any], key: str) -> str:
    value = to_text(item.get(key))
    if not value:
        raise FrameError(f"{key} missing")
    return value


def _price(value: Any) -> float | None:
    """Locked quotes carry "0": that is no price, not a price of 0 (the raw string stays in attrs)."""
    price = to_float(value)
    return None if price == 0 else price
