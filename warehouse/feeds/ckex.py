"""CKEX interact WebSocket (`kind = "ckex-ws"`): order-slip quotes for subscribed markets.

The token goes in the query as `authorization=bearer <JWT>`. Commands are JSON with the vendor's
own key spelling `commend`: `start`, then one subscribe per market; a subscription lives "at least
one hour", so the runtime re-sends every subscribe well before that. All values the server sends
are strings. Vendor documentation: CKEX "interact ws" (order-slip quote) page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from warehouse.feeds.contract import ERROR, HEARTBEAT, ConnectSpec, Feed, FrameError, Output
from warehouse.feeds.values import obj, parse_time, to_decimal, to_float, to_text
from warehouse.options import setting
from warehouse.records import PriceTick, Record

BOOKMAKER = "ckex"
FANCY_TYPES = ("order-slip-fancy", "order-slipt-fancy")  # the page spells it both ways
_PREFIXES = ("order-slip-quote@chloe-market#", "order-slip-quote@fancy-market#")


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the stream endpoint, e.g. wss://host/{stage}/quote/do-not-look-back")
    token_env: str = setting("environment variable holding the bearer JWT", secret=True)
    subscriptions: tuple[str, ...] = setting(
        "the vendor's own command strings: order-slip-quote@chloe-market#EVENT@MARKET or …@fancy-market#…")
    resubscribe_s: float = setting("subscriptions are renewed this often (well inside the vendor's one-hour life)",
                                   1800.0, positive=True)


def command(text: str) -> str:
    return orjson.dumps({"commend": text}).decode()


def unsubscribe(subscription: str) -> str:
    """`order-slip-quote@chloe-market#E@M` → `unsubscribe-order-slip-quote#E@M` (no family part)."""
    return command("unsubscribe-order-slip-quote#" + subscription.split("#", 1)[1])


class Ckex(Feed[Options]):
    kind = "ckex-ws"
    version = "2"  # 2: numbers exact from the wire; prices no double holds, and odds that are no price, refused
    options = Options
    default_silence_s = 60.0  # the server sends `alive`
    doc = "CKEX interact ws: order-slip quotes of subscribed markets"

    def validate(self, options: Options) -> str | None:
        for subscription in options.subscriptions:
            if not subscription.startswith(_PREFIXES) or subscription.count("@") < 2:
                return (f"subscription {subscription!r} is not 'order-slip-quote@chloe-market#EVENT@MARKET' "
                        "or 'order-slip-quote@fancy-market#EVENT@MARKET'")
        return None

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        separator = "&" if "?" in options.url else "?"
        url = f"{options.url}{separator}authorization={quote('bearer ' + secrets['token_env'], safe='')}"
        subscribes = tuple(command(s) for s in options.subscriptions)
        return ConnectSpec(transport="ws", url=url, send_on_connect=(command("start"), *subscribes),
                           periodic=tuple((options.resubscribe_s, message) for message in subscribes))

    def reload_commands(self, old: Options, new: Options) -> Sequence[str]:
        """Unsubscribe what went, subscribe what came: a live connection follows the new list."""
        return ([unsubscribe(s) for s in old.subscriptions if s not in new.subscriptions]
                + [command(s) for s in new.subscriptions if s not in old.subscriptions])

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source, options.subscriptions)


def _event_of_markets(subscriptions: Sequence[str]) -> dict[str, str]:
    """market id → event id, from `…#EVENT@MARKET` (fancy quotes often omit `eid`)."""
    mapping = {}
    for subscription in subscriptions:
        event, _, market = subscription.split("#", 1)[1].partition("@")
        mapping[market] = event
    return mapping


class Adapter:
    def __init__(self, source: str, subscriptions: Sequence[str] = ()) -> None:
        self.source = source
        self.event_of_market = _event_of_markets(subscriptions)

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = obj(message, "message")
        message_type = msg.get("type")
        if not msg:
            return Output("empty", control=HEARTBEAT)  # `{}` keep-alives of sibling sockets
        if message_type == "alive":
            return Output("alive", control=HEARTBEAT)
        if message_type == "error":
            return Output("error", control=ERROR, detail={"error": msg.get("error")})
        items = msg.get("data") or []
        if not isinstance(items, list):
            raise FrameError(f"data: list expected, got {type(items).__name__}")
        if message_type == "order-slip":
            return Output(message_type, [self._quote(received_at, obj(i, "data[]")) for i in items])
        if message_type in FANCY_TYPES:
            records: list[Record] = []
            for item in items:
                records += self._fancy(received_at, obj(item, "data[]"))
            return Output("order-slip-fancy", records)
        raise FrameError(f"unknown type {message_type!r}")

    def _quote(self, at: datetime, item: dict[str, Any]) -> PriceTick:
        status = to_text(item.get("status"))
        return PriceTick(
            at, self.source, BOOKMAKER, _need(item, "event_id"), _need(item, "market_id"), _need(item, "product_id"),
            price=_price(item.get("price"), above=1), active=status == "1", status=status,
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
            PriceTick(at, self.source, BOOKMAKER, event, market, product, price=_price(item.get(odds), above=0),
                      line=to_decimal(item.get(line)), side=side, active=status == "1", status=status,
                      source_ts=source_ts, attrs={"odds": item.get(odds), **rest})
            for side, line, odds in (("back", "bl", "bo"), ("lay", "ll", "lo"))
        ]


def _need(item: dict[str, Any], key: str) -> str:
    value = to_text(item.get(key))
    if not value:
        raise FrameError(f"{key} missing")
    return value


def _price(value: Any, above: int) -> float | None:
    """Locked quotes carry "0": that is no price, not a price of 0 (the raw string stays in attrs). Any
    other must be above `above`: decimal odds above 1; a fancy market's rates (often "100") above 0."""
    return None if to_float(value) == 0 else to_float(value, above=above)


FEED = Ckex()
