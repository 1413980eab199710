"""55-tech MM WebSocket (`kind = "mm-ws"`): orders, bets, accounts, scores and emergency broadcasts.

The API key goes in the first `subscribe` message (within 30 s of connecting), with the channels
asked for; the `subscribed` reply says which were granted. Client `ping` every 30 s; server
`pong` and `heartbeat` (every 60 s) keep the watchdog fed. Broadcasts are change-data-capture
rows: `payload` (new values, full or partial) and, on UPDATE, `old`. Error strings about the key
or the connection limit mean a long pause before trying again.
Vendor documentation: https://docs.55-tech.com/mm-api/websocket
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from warehouse.feeds.contract import ERROR, HEARTBEAT, RETRY_LONG, SUBSCRIBED, ConnectSpec, Feed, FrameError, Output
from warehouse.feeds.values import obj, parse_time, to_bool, to_decimal, to_int, to_text
from warehouse.options import setting
from warehouse.records import AccountChange, BetChange, EmergencyEvent, OrderChange, Record, ScoreChange

CHANNELS = ("orders", "bets", "accounts", "scores", "emergency")
# Errors after which retrying soon cannot help: a bad key, or too many sockets for the key.
_LONG_PAUSE_ERRORS = ("apikey required", "api_key required", "invalid apikey format", "invalid api key",
                      "connection limit exceeded")


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the stream endpoint, e.g. wss://mmapi.55-tech.com/ws/subscribe")
    api_key_env: str = setting("environment variable holding the API key (a UUID)", secret=True)
    channels: tuple[str, ...] = setting(f"channels to subscribe to, of {', '.join(CHANNELS)}", CHANNELS)
    client_ping_s: float = setting("client `ping` interval (the vendor recommends 30 s)", 30.0, positive=True)


class Mm(Feed[Options]):
    kind = "mm-ws"
    version = "1"
    options = Options
    default_silence_s = 90.0  # heartbeat every 60 s, pong every 30 s
    max_connections_per_key = 5  # the vendor's limit
    doc = "55-tech MM WebSocket: orders, bets, accounts, scores and emergency broadcasts"

    def validate(self, options: Options) -> str | None:
        unknown = [c for c in options.channels if c not in CHANNELS]
        if unknown:
            return f"unknown channel {unknown[0]!r}; channels are {', '.join(CHANNELS)}"
        return None

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        subscribe = orjson.dumps({"type": "subscribe", "apiKey": secrets["api_key_env"],
                                  "channels": list(options.channels)}).decode()
        return ConnectSpec(transport="ws", url=options.url, send_on_connect=(subscribe,),
                           periodic=((options.client_ping_s, '{"type":"ping"}'),),
                           send_on_close=('{"type":"unsubscribe"}',))

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source, options.channels)


class Adapter:
    def __init__(self, source: str, channels: Sequence[str] = CHANNELS) -> None:
        self.source = source
        self.asked = list(channels)

    def handle(self, message: Any, received_at: datetime) -> Output:
        if isinstance(message, str):  # error strings may come bare
            return self._error(message)
        msg = obj(message, "message")
        message_type = msg.get("type")
        if message_type in ("pong", "heartbeat"):
            return Output(message_type, control=HEARTBEAT)
        if message_type == "subscribed":
            granted = msg.get("channels")
            detail = {"subscription_id": msg.get("subscriptionId", msg.get("subscription_id")),
                      "asked": self.asked, "granted": granted,
                      "refused": [c for c in self.asked if isinstance(granted, list) and c not in granted]}
            return Output("subscribed", control=SUBSCRIBED, detail=detail)
        if message_type == "error" or ("error" in msg and message_type is None):
            return self._error(str(msg.get("message") or msg.get("error") or ""))
        if message_type != "broadcast":
            raise FrameError(f"unknown type {message_type!r}")
        channel = msg.get("channel")
        event = to_text(msg.get("event"))
        if event not in ("INSERT", "UPDATE"):
            raise FrameError(f"event must be INSERT or UPDATE, got {event!r}")
        payload = obj(msg.get("payload"), "payload")
        old = msg.get("old")
        if old is not None:
            obj(old, "old")
        if not isinstance(channel, str):
            raise FrameError(f"channel must be a string, got {channel!r}")
        mapper = {"orders": self._order, "bets": self._bet, "accounts": self._account, "scores": self._score,
                  "emergency": self._emergency}.get(channel)
        if mapper is None:
            raise FrameError(f"unknown channel {channel!r}")
        return Output(f"{channel}:{event}", [mapper(received_at, event, payload, old)])

    def _error(self, text: str) -> Output:
        long = any(phrase in text.lower() for phrase in _LONG_PAUSE_ERRORS)
        return Output("error", control=RETRY_LONG if long else ERROR, detail={"error": text})

    def _order(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> Record:
        return OrderChange(
            at, self.source, event, to_text(p.get("orderId", p.get("id"))),
            fixture_id=to_text(p.get("fixtureId")), outcome_id=to_text(p.get("outcomeId")),
            exchange=to_text(p.get("exchange")), exchange_order_id=to_text(p.get("exchangeOrderId")),
            order_status=to_text(p.get("orderStatus")), matched_status=to_text(p.get("matchedStatus")),
            price=to_decimal(p.get("orderCents")), stake=to_decimal(p.get("orderStake")),
            matched_stake=to_decimal(p.get("matchedStake")),
            source_ts=parse_time(p.get("matchedAt") or p.get("createdAt")), payload=p, old=old,
        )

    def _bet(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> Record:
        return BetChange(
            at, self.source, event, to_text(p.get("betId", p.get("id"))), order_id=to_text(p.get("orderId")),
            bookmaker=to_text(p.get("bookmaker")), bet_status=to_text(p.get("betStatus")),
            price=to_decimal(p.get("placedPrice")), stake=to_decimal(p.get("placedStake")),
            source_ts=parse_time(p.get("placedAt")), payload=p, old=old,
        )

    def _account(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> Record:
        account = p.get("accountId", p.get("account_id", p.get("id")))
        return AccountChange(at, self.source, event, account_id=to_text(account),
                             source_ts=parse_time(p.get("updatedAt")), payload=p, old=old)

    def _score(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> Record:
        scores = obj(p.get("scores") or {}, "scores")
        status = p.get("statusId")
        rest = {k: v for k, v in scores.items() if k not in ("home", "away")}
        return ScoreChange(
            at, self.source, to_text(p.get("fixtureId")) or "", period=to_text(p.get("currentPeriod")),
            home_score=to_int(scores.get("home")), away_score=to_int(scores.get("away")),
            minute=to_int(p.get("currentMinute")), live=to_bool(p.get("live")),
            status=None if status is None else str(to_int(status)), attrs=rest or None,
        )

    def _emergency(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> Record:
        return EmergencyEvent(at, self.source, to_bool(p.get("emergency")), reason=to_text(p.get("reason")),
                              source_ts=parse_time(p.get("triggeredAt")), payload=p)


FEED = Mm()
