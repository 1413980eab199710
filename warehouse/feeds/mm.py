"""55-tech MM WebSocket (`kind = "mm-ws"`): orders, bets, accounts, scores and emergency broadcasts.

The API key goes in the first `subscribe` message (within 30 s of connecting), with the channels
asked for; the `subscribed` reply says which were granted. Client `ping` every 30 s; server
`pong` and `heartbeat` (every 60 s) keep the watchdog fed. Broadcasts are change-data-capture
rows: `payload` (new values, full or partial) and, on UPDATE, `old`.
Vendor documentation: https://docs.55-tech.com/mm-api/websocket

The vendor's pages spell the key two ways: `apiKey` (the WebSocket page, the seed) and `api_key`
(the API reference), in the subscribe message and in its error texts; `subscriptionId` and
`subscription_id` likewise. `api_key_field` picks which the subscribe message sends; the replies
are read in either spelling. The documented errors are matched whatever their spelling and case,
as a JSON object, a JSON string or plain text (`decode` makes plain text a JSON string):
- `apiKey required` and `Invalid apiKey format` stop the feed: we always send a key, so the vendor
  found none under the field we used, or the key configured is no UUID. The same subscribe can only
  get the same answer; the configuration must change (the error row says what to change).
- `Invalid API key` (unknown key, or a client the vendor deactivated) and `Connection limit
  exceeded` (5 sockets for the key, some perhaps our own half-dead ones) mean a long pause: the
  vendor can reactivate the client, and stale sockets time out, with nothing changed on our side.

The socket has no replay: after a gap the REST side heals it (docs/resync.md). Orders and bets
changed since the last frame before the gap (less a safety margin) up to the resync's start, page
by page, and the accounts; each object becomes one row with event SNAPSHOT (the object as the
vendor holds it now, not a difference from what is stored: the adapter stays pure, and replay
derives the same rows from the stored answer alone).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from warehouse.feeds.contract import (
    ERROR,
    FATAL,
    HEARTBEAT,
    RETRY_LONG,
    SUBSCRIBED,
    ConnectSpec,
    Control,
    Feed,
    FrameError,
    Output,
    RestCall,
    RestPolicy,
    RestRequest,
    ResyncContext,
    rest_base,
    rest_calls_setting,
    rest_timeout_setting,
    rest_url_setting,
    resync_setting,
)
from warehouse.feeds.values import obj, parse_time, to_bool, to_decimal, to_int, to_text
from warehouse.options import setting
from warehouse.records import (
    ORIGIN_SNAPSHOT,
    AccountChange,
    BetChange,
    EmergencyEvent,
    OrderChange,
    RawMessage,
    Record,
    ScoreChange,
)

CHANNELS = ("orders", "bets", "accounts", "scores", "emergency")
_EVENTS = (OrderChange, BetChange, AccountChange, ScoreChange, EmergencyEvent)  # what a broadcast derives
KEY_FIELDS = ("apiKey", "api_key")  # the subscribe message's key, as the WebSocket page and the API reference spell it
# The documented errors, letters only, lower case (`Invalid api_key format` → invalidapikeyformat), most
# specific first (invalidapikey is in invalidapikeyformat), with what each means for the feed.
_KEY_MISSING, _KEY_FORMAT = "apikeyrequired", "invalidapikeyformat"
_ERRORS: tuple[tuple[str, Control], ...] = ((_KEY_MISSING, FATAL), (_KEY_FORMAT, FATAL), ("invalidapikey", RETRY_LONG),
                                            ("connectionlimitexceeded", RETRY_LONG))
_LETTERS = re.compile(r"[^a-z]+")
_MAX_PLAIN_ERROR = 200  # bytes: a longer frame is no error text
SNAPSHOT = "SNAPSHOT"  # the event of a row fetched over REST
# fromDate goes back this far before the last frame before a gap: a change committed at the vendor
# just before the gap may reach the socket after it, and vendor and our clocks differ a little.
SAFETY_MARGIN = timedelta(seconds=60)
PAGE_SIZE = 500  # the vendor allows up to 2000
# REST endpoint of each channel that has one
ENDPOINTS = {"orders": "/api/v1/orders", "bets": "/api/v1/bets", "accounts": "/api/v1/accounts"}


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the stream endpoint, e.g. wss://mmapi.55-tech.com/ws/subscribe")
    api_key_env: str = setting("environment variable holding the API key (a UUID)", secret=True)
    channels: tuple[str, ...] = setting(f"channels to subscribe to, of {', '.join(CHANNELS)}", CHANNELS)
    client_ping_s: float = setting("client `ping` interval (the vendor recommends 30 s)", 30.0, positive=True)
    api_key_field: str = setting('the subscribe message\'s key field: "apiKey" (the vendor\'s WebSocket page) or'
                                 ' "api_key" (its API reference)', "apiKey")
    rest_url: str = rest_url_setting("https://mmapi.55-tech.com", "/api/v1")
    resync: bool = resync_setting()
    resync_hours: float = setting("with nothing stored yet, a resync fetches orders and bets changed in this many"
                                  " hours", 24.0, positive=True)
    rest_calls_per_s: float = rest_calls_setting(1.5)  # the vendor's budget: 100 requests a minute
    rest_timeout_s: float = rest_timeout_setting()


class Mm(Feed[Options]):
    kind = "mm-ws"
    identifies_events = True
    version = "3"  # 2: the documented errors in any spelling; a missing or malformed key stops the feed. 3: numbers
    # exact from the wire; odds that are no price refused
    options = Options
    default_silence_s = 90.0  # heartbeat every 60 s, pong every 30 s
    max_connections_per_key = 5  # the vendor's limit
    doc = "55-tech MM WebSocket: orders, bets, accounts, scores and emergency broadcasts"

    def validate(self, options: Options) -> str | None:
        unknown = [c for c in options.channels if c not in CHANNELS]
        if unknown:
            return f"unknown channel {unknown[0]!r}; channels are {', '.join(CHANNELS)}"
        if options.api_key_field not in KEY_FIELDS:
            return f"api_key_field must be \"apiKey\" or \"api_key\", got {options.api_key_field!r}"
        return None

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        subscribe = orjson.dumps({"type": "subscribe", options.api_key_field: secrets["api_key_env"],
                                  "channels": list(options.channels)}).decode()
        return ConnectSpec(transport="ws", url=options.url, send_on_connect=(subscribe,),
                           periodic=((options.client_ping_s, '{"type":"ping"}'),),
                           send_on_close=('{"type":"unsubscribe"}',))

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source, options.channels, options=options)

    def identity(self, raw: RawMessage, records: Sequence[Record]) -> str | None:
        """A broadcast that names its object and the time of the change: one change of one object,
        delivered twice as the same bytes. A broadcast without a change time (an order's PLACED, an
        account's balance, a score) has no identity: the same bytes may be two changes."""
        record = next((r for r in records if isinstance(r, _EVENTS)), None)
        payload = getattr(record, "payload", None)
        if raw.payload is None or not isinstance(payload, dict) or not _change_time(raw.kind, payload):
            return None
        return f"{raw.kind}:{hashlib.sha256(raw.payload).hexdigest()[:32]}"

    def decode(self, data: bytes, limit: int) -> bytes:
        """A documented error sent as plain text becomes the JSON string it would have been; any
        other frame is left as it is (plain text that is no known error is quarantined: not JSON)."""
        if data[:1] in (b"{", b"[", b'"') or len(data) > _MAX_PLAIN_ERROR:  # JSON: every frame but such errors
            return data
        text = data.decode("utf-8", "replace").strip()
        return orjson.dumps(text) if _error_control(text) is not None else data

    def rest_policy(self, options: Options) -> RestPolicy:
        return RestPolicy(enabled=options.resync, calls_per_s=options.rest_calls_per_s,
                          timeout_s=options.rest_timeout_s)

    def resync(self, options: Options, secrets: Mapping[str, str], context: ResyncContext) -> list[RestRequest]:
        base = rest_base(options.url, options.rest_url)
        headers = (("X-API-Key", secrets["api_key_env"]),)
        since = (context.gap_started or context.now - timedelta(hours=options.resync_hours)) - SAFETY_MARGIN
        window = (("fromDate", _iso(since)), ("toDate", _iso(context.now)))
        requests = []
        for channel, path in ENDPOINTS.items():
            if channel not in options.channels:
                continue
            if channel == "accounts":  # the current balances; no date filter
                requests.append(RestRequest(ORIGIN_SNAPSHOT, base, path, headers=headers, covers=channel))
            else:
                requests.append(RestRequest(ORIGIN_SNAPSHOT, base, path, window, headers, page_size=PAGE_SIZE,
                                            covers=channel))
        return requests

    def rest_adapter(self, source: str, options: Options, call: RestCall) -> RestAdapter:
        return RestAdapter(source, call)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _change_time(kind: str, payload: dict[str, Any]) -> Any:
    """When the change a broadcast carries was made, as the vendor says (None: it does not say)."""
    channel, _, event = kind.partition(":")
    if payload.get("updatedAt"):
        return payload["updatedAt"]
    if event == "INSERT":  # the object's creation is the change
        return payload.get("createdAt") or payload.get("placedAt")
    return payload.get("matchedAt") if channel == "orders" else payload.get("triggeredAt")


def _letters(text: str) -> str:
    return _LETTERS.sub("", text.lower())


def _error_control(text: str) -> Control | None:
    """What a documented error text means (FATAL or RETRY_LONG), whatever its spelling; None if it is none."""
    letters = _letters(text)
    return next((control for phrase, control in _ERRORS if phrase in letters), None)


class Adapter:
    def __init__(self, source: str, channels: Sequence[str] = CHANNELS, origin: str | None = None,
                 options: Options | None = None) -> None:
        self.source = source
        self.asked = list(channels)
        self.origin = origin
        self.options = options
        self._mappers: dict[str, Callable[[datetime, str, dict[str, Any], Any], Record]] = {
            "orders": self._order, "bets": self._bet, "accounts": self._account, "scores": self._score,
            "emergency": self._emergency}  # made once: a frame only looks its channel up

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
        mapper = self._mappers.get(channel)
        if mapper is None:
            raise FrameError(f"unknown channel {channel!r}")
        return Output(f"{channel}:{event}", [mapper(received_at, event, payload, old)])

    def _error(self, text: str) -> Output:
        detail: dict[str, Any] = {"error": text}
        letters = _letters(text)
        if _KEY_MISSING in letters and self.options is not None:
            other = next(f for f in KEY_FIELDS if f != self.options.api_key_field)
            detail["fix"] = (f"the vendor found no key under \"{self.options.api_key_field}\":"
                             f" set api_key_field = \"{other}\" (its pages spell the field both ways)")
        elif _KEY_FORMAT in letters and self.options is not None:
            detail["fix"] = f"the key in {self.options.api_key_env} is not a UUID: set it to the MM API key (a UUID)"
        return Output("error", control=_error_control(text) or ERROR, detail=detail)

    def _order(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> OrderChange:
        return OrderChange(
            at, self.source, event, to_text(p.get("orderId", p.get("id"))),
            fixture_id=to_text(p.get("fixtureId")), outcome_id=to_text(p.get("outcomeId")),
            exchange=to_text(p.get("exchange")), exchange_order_id=to_text(p.get("exchangeOrderId")),
            order_status=to_text(p.get("orderStatus")), matched_status=to_text(p.get("matchedStatus")),
            price=to_decimal(p.get("orderCents"), above=0), stake=to_decimal(p.get("orderStake")),
            matched_stake=to_decimal(p.get("matchedStake")),
            source_ts=parse_time(p.get("matchedAt") or p.get("createdAt")), payload=p, old=old, origin=self.origin,
        )

    def _bet(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> BetChange:
        return BetChange(
            at, self.source, event, to_text(p.get("betId", p.get("id"))), order_id=to_text(p.get("orderId")),
            bookmaker=to_text(p.get("bookmaker")), bet_status=to_text(p.get("betStatus")),
            price=to_decimal(p.get("placedPrice"), above=1), stake=to_decimal(p.get("placedStake")),
            source_ts=parse_time(p.get("placedAt")), payload=p, old=old, origin=self.origin,
        )

    def _account(self, at: datetime, event: str, p: dict[str, Any], old: Any) -> AccountChange:
        account = p.get("accountId", p.get("account_id", p.get("id")))
        return AccountChange(at, self.source, event, account_id=to_text(account),
                             source_ts=parse_time(p.get("updatedAt")), payload=p, old=old, origin=self.origin)

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


class RestAdapter:
    """Pure: one REST page (a JSON array of orders, bets or accounts; an object holding the array
    under `data` or `items` is taken too) → one row per object, event SNAPSHOT. Its vendor time is the
    object's `updatedAt` (its last change) where it has one."""

    def __init__(self, source: str, call: RestCall) -> None:
        self.source, self.call = source, call
        self.stream = Adapter(source, origin=call.origin)

    def handle(self, message: Any, received_at: datetime) -> Output:
        mappers: dict[str, Callable[[datetime, str, dict[str, Any], Any], OrderChange | BetChange | AccountChange]] = {
            "/api/v1/orders": self.stream._order, "/api/v1/bets": self.stream._bet,
            "/api/v1/accounts": self.stream._account}
        mapper = mappers.get(self.call.path)
        if mapper is None:
            raise FrameError(f"no REST adapter for {self.call.path}")
        if isinstance(message, dict):
            message = next((message[k] for k in ("data", "items") if isinstance(message.get(k), list)), message)
        if not isinstance(message, list):
            raise FrameError(f"a list of objects expected, got {type(message).__name__}")
        records: list[Record] = []
        for item in message:
            item = obj(item, "item")
            record = mapper(received_at, SNAPSHOT, item, None)
            updated = parse_time(item.get("updatedAt"))
            records.append(record._replace(source_ts=updated) if updated else record)
        return Output(self.call.kind, records, detail={"items": len(message)})


FEED = Mm()
