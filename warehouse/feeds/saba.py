"""Saba OddsDirect GetEvents push over SSE (`kind = "saba-sse"`).

Status 1 (initial data) and 3 (reset: the server lost our Last-Event-ID) carry the full state in
`add`; 0 carries deltas; 97/98 are configuration errors; 99/100 mean retry later. Within a frame
the order is events then markets, each remove → add → change. One `price_ticks` row per
selection. Vendor documentation: Saba OddsDirect "GetEvents (Push)" API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec

from warehouse import exactjson
from warehouse.feeds.contract import (
    FATAL,
    INITIAL,
    RESET,
    RETRY,
    RETRY_LONG,
    ConnectSpec,
    Control,
    Feed,
    FrameError,
    Login,
    Output,
    Reaction,
)
from warehouse.feeds.values import obj, parse_time, to_bool, to_decimal, to_float, to_int, to_text
from warehouse.options import setting
from warehouse.records import FixtureChange, MarketChange, PriceTick, RawMessage, Record, ScoreChange

BOOKMAKER = "saba"
_tuple_new = tuple.__new__
_INFINITY = float("inf")
_SPORT_BLOCKS = ("soccerInfo", "tennisInfo", "beachVolleyBallInfo", "eSportInfo", "basketballInfo",
                 "baseballInfo", "volleyballInfo", "volleyBallInfo")


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the full stream endpoint …/sports/stream/v1/GetEvents")
    query: str | None = setting("OData filter of events, e.g. `$filter=sporttype eq 1`", None)
    include_markets: str | None = setting("OData filter of markets, e.g. `$filter=bettype eq 1`", None)
    language: str | None = setting("language of names, e.g. `en`", None)
    token_env: str | None = setting("environment variable holding a bearer token (or log in instead)", None,
                                    secret=True)
    vendor_id: str | None = setting("vendor id, to log in and renew the 10-minute token itself", None)
    vendor_member_id_env: str | None = setting("environment variable holding the vendor member id (login)", None,
                                               secret=True)
    login_url: str | None = setting("login endpoint (default: <scheme://host>/login)", None)


class Saba(Feed[Options]):
    kind = "saba-sse"
    identifies_events = True
    version = "2"  # 2: numbers exact from the wire; prices no double holds, and odds that are no price, refused
    options = Options
    default_silence_s = 20.0  # the server sends a keep-alive every 5 s
    doc = "Saba OddsDirect GetEvents push (Server-Sent Events), resumable by Last-Event-ID"

    def validate(self, options: Options) -> str | None:
        if options.token_env or (options.vendor_id and options.vendor_member_id_env):
            return None
        return "needs token_env, or vendor_id with vendor_member_id_env to log in"

    def identity(self, raw: RawMessage, records: Sequence[Record]) -> str | None:
        """The SSE id, with the frame's kind: a snapshot (status 1 or 3) carries the id of the delta it
        follows, and is another frame than that delta."""
        return f"{raw.kind}#{raw.event_id}" if raw.event_id is not None else None

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        params = {name: value for name, value in (("query", options.query), ("includeMarkets", options.include_markets),
                                                  ("language", options.language)) if value is not None}
        url = options.url + ("?" + urlencode(params) if params else "")
        headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip, deflate"}
        login = None
        if "token_env" in secrets:
            headers["Authorization"] = f"Bearer {secrets['token_env']}"
        else:
            scheme, host, *_ = urlsplit(options.url)
            base = urlunsplit((scheme, host, "", "", ""))
            login = Login(
                url=options.login_url or f"{base}/login",
                refresh_url=f"{base}/refreshToken",
                body={"vendor_id": options.vendor_id or "", "vendor_member_id": secrets["vendor_member_id_env"]},
            )
        return ConnectSpec(transport="sse", url=url, headers=headers, bearer_from_login=login,
                           resume_header="Last-Event-ID")

    def refused(self, status: int, body: str) -> Reaction:
        if status == 400:  # status 97 (Accept-Encoding) or 98 (OData filter): retrying cannot help
            return Reaction(fatal=True)
        return super().refused(status, body)

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source)


class Adapter:
    """Pure: one SSE data object → records. Remembers which event each market belongs to.

    Every frame of the feed runs through here, so it is written for speed (docs/performance.md,
    "Firehose"), as the OddsPapi adapter is: objects checked inline (`obj` is called only to raise
    its error), a market's and a selection's other keys taken by copying and popping, and each row
    made as the tuple it is. The checks and their order are those of the plain walk it replaced
    (tests/saba_oracle.py). Two walks share the vendor's logic (`_sections`, `_event`, `_market`):
    `handle` walks the decoded dicts; `handle_text` decodes a frame's levels above the events and
    markets straight into their shape (msgspec Structs) and leaves any other frame to `handle`. A
    frame gives the same rows, or the same FrameError, either way."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.event_of_market: dict[str, str] = {}

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = message if type(message) is dict else obj(message, "data")
        status = msg.get("status")
        if status in (97, 98):
            return Output(f"status-{status}", control=FATAL, detail=_detail(msg))
        if status == 99:
            return Output("status-99", control=RETRY_LONG, detail=_detail(msg))
        if status == 100:
            return Output("status-100", control=RETRY, detail=_detail(msg))
        if status not in (0, 1, 3):
            raise FrameError(f"unknown status {status!r}")
        if status in (1, 3):
            self.event_of_market.clear()  # `add` is the whole state from here on
        payload = msg.get("payload") or {}
        if type(payload) is not dict:
            obj(payload, "payload")
        events = payload.get("events") or {}
        if type(events) is not dict:
            obj(events, "payload.events")
        markets = payload.get("markets") or {}
        if type(markets) is not dict:
            obj(markets, "payload.markets")
        records = self._sections(received_at, events, markets, _list, self.event_of_market, self.event_of_market)
        control: Control | None = INITIAL if status == 1 else RESET if status == 3 else None
        return Output(f"status-{status}", records, control=control, detail=_detail(msg) if control else None)

    def handle_text(self, data: bytes, received_at: datetime) -> Output | None:
        """A delta, snapshot or reset frame that removes no market (nearly all of them), from its text:
        the levels above its events and markets decoded into their shape (`_Message`, below), which
        takes no other key, and the events and markets as dicts, every number by the same rule as
        `exactjson.loads`. None for any other frame, and for one whose rows are refused: `handle` then
        takes it (decoded into dicts), and says why. The market → event map changes only once the
        rows are made, so `handle` starts from the map as it was."""
        try:
            message = _decode_frame(data)
            status = message.status
            payload = message.payload
            if type(status) is not int or status not in (0, 1, 3) or payload is None:
                return None
            if payload.markets.remove:
                return None  # a market removed: `handle` takes it (a removal must change the map at once)
            known: dict[str, str] = {}
            records = self._sections(received_at, payload.events, payload.markets, getattr,
                                     known, self.event_of_market if status == 0 else {})
        except Exception:  # not such a frame, or one to refuse: the general path decides, and says why
            return None
        if status == 0:
            self.event_of_market.update(known)
            return Output("status-0", records)
        self.event_of_market.clear()  # `add` is the whole state from here on
        self.event_of_market.update(known)
        return Output(f"status-{status}", records, control=INITIAL if status == 1 else RESET,
                      detail={"status": status, "message": message.message})

    def _sections(self, at: datetime, events: Any, markets: Any, lists: Callable[[Any, str], list[Any]],
                  known: dict[str, str], earlier: dict[str, str]) -> list[Record]:
        """A frame's records, in the vendor's order: events then markets, each remove → add → change.
        `lists(section, name)` reads a list of a section; markets' events are read from `known`, else
        `earlier`, and written to `known`."""
        records: list[Record] = []
        for event_id in lists(events, "remove"):
            records.append(FixtureChange(at, self.source, _id(event_id, "eventId"), "remove"))
        for event in lists(events, "add"):
            records += self._event(at, event if type(event) is dict else obj(event, "events.add[]"), "add")
        for event in lists(events, "change"):
            records += self._event(at, event if type(event) is dict else obj(event, "events.change[]"), "change")
        for market_id in lists(markets, "remove"):
            market_id = _id(market_id, "marketId")
            fixture = known.pop(market_id, "")
            records.append(MarketChange(at, self.source, fixture, market_id, "remove", bookmaker=BOOKMAKER))
        for action in ("add", "change"):
            for market in lists(markets, action):
                if type(market) is not dict:
                    obj(market, f"markets.{action}[]")
                self._market(records, at, action, market, known, earlier)
        return records

    def _event(self, at: datetime, event: dict[str, Any], action: str) -> list[Record]:
        fixture = _id(event.get("eventId"), "eventId")
        status = event.get("eventStatus")
        rows: list[Record] = [FixtureChange(
            at, self.source, fixture, action,
            start_time=parse_time(event.get("kickOffTime")),
            status=status if isinstance(status, str) else None,
            changes=event,
        )]
        game = event.get("gameInfo")
        if isinstance(game, dict):
            seconds = to_int(game.get("seconds"))
            counting_up = game.get("clockDirection", "inc") != "dec"
            attrs = {k: v for k, v in game.items() if k not in ("liveHomeScore", "liveAwayScore", "livePeriod")}
            attrs.update({k: event[k] for k in _SPORT_BLOCKS if event.get(k) is not None})
            rows.append(ScoreChange(
                at, self.source, fixture,
                period=to_text(game.get("livePeriod")),
                home_score=to_int(game.get("liveHomeScore")),
                away_score=to_int(game.get("liveAwayScore")),
                minute=seconds // 60 if seconds is not None and counting_up else None,
                live=to_bool(event.get("isLive")),
                status=status if isinstance(status, str) else None,
                attrs=attrs or None,
            ))
        return rows

    def _market(self, out: list[Record], at: datetime, action: str, market: dict[str, Any], known: dict[str, str],
                earlier: dict[str, str]) -> None:
        """A market's rows into `out`: its MarketChange, and a PriceTick for each of its selections.
        Its event is read from `known`, else `earlier`, and written to `known`."""
        market_id = _id(market.get("marketId"), "marketId")
        event_id = market.get("eventId")
        if event_id is not None:
            known[market_id] = _id(event_id, "eventId")
        fixture = known.get(market_id) or earlier.get(market_id, "")
        status = market.get("marketStatus")
        status = status if type(status) is str else None
        active = None if status is None else status.lower() == "running"
        max_bet = market.get("maxBet")
        max_stake = None if max_bet is None else to_decimal(max_bet)
        attrs = market.copy()
        selections = attrs.pop("selections", None) or []
        # The records' fields in order (records.py); tuple.__new__ skips the keyword handling of their __new__.
        out.append(_tuple_new(MarketChange, (at, self.source, fixture, market_id, action, BOOKMAKER, status, None,
                                             attrs, None)))
        if type(selections) is not list:
            raise FrameError(f"selections must be a list, got {type(selections).__name__}")
        source, has_bet_type, bet_type = self.source, "betType" in market, market.get("betType")
        for selection in selections:
            if type(selection) is not dict:
                obj(selection, "selections[]")
            odds = selection.get("oddsPrice") or {}
            if type(odds) is not dict:
                obj(odds, "oddsPrice")
            extra = selection.copy()  # the fields that are no column go to attrs, then the odds' other formats
            key, point = extra.pop("key", None), extra.pop("point", None)
            extra.pop("oddsPrice", None)
            price = odds.get("decimalPrice")
            if price is not None and "decimalPrice" not in extra:
                extra.update(odds)
                del extra["decimalPrice"]
            else:
                extra.update({k: v for k, v in odds.items() if k != "decimalPrice"})
            if has_bet_type:
                extra["betType"] = bet_type
            # The common values inline (a text key, a float price above 1, no line); the value functions
            # for any other, in the same order.
            out.append(_tuple_new(PriceTick, (
                at, source, BOOKMAKER, fixture, market_id,
                key if type(key) is str and key else _id(key, "selection key"),
                price if type(price) is float and 1 < price < _INFINITY else to_float(price, above=1),
                None,  # player_id
                None if point is None else to_decimal(point),  # line
                None,  # side
                active, status, max_stake,
                None,  # source_ts
                extra or None,
                None,  # origin
            )))


def _detail(msg: dict[str, Any]) -> dict[str, Any]:
    return {"status": msg.get("status"), "message": msg.get("message")}


def _list(section: dict[str, Any], key: str) -> list[Any]:
    value = section.get(key) or []
    if not isinstance(value, list):
        raise FrameError(f"{key}: list expected, got {type(value).__name__}")
    return value


def _id(value: Any, what: str) -> str:
    if type(value) is int:  # the common case: no calls
        return str(value)
    text = to_text(value)
    if not text:
        raise FrameError(f"{what} missing")
    return text


# -- a frame's shape above its events and markets, for the typed walk (Adapter.handle_text) ---------------
# Each level is a Struct that takes no key besides those shared/protocols/saba-sse.md lists (a frame with
# any other is left to `handle`). Events and markets are dicts, as the walks' `_event` and `_market` read
# them, every number by exactjson's rule (the same hook): the values are those `exactjson.loads` gives.
# Their key order is the frame's, which the rows' attrs keep.


class _Section(msgspec.Struct, forbid_unknown_fields=True):  # events or markets: the same three lists
    add: list[dict[str, Any]] = []
    change: list[dict[str, Any]] = []
    remove: list[Any] = []


class _Payload(msgspec.Struct, forbid_unknown_fields=True):
    events: _Section = msgspec.field(default_factory=_Section)
    markets: _Section = msgspec.field(default_factory=_Section)


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    status: Any = None
    message: Any = None
    payload: _Payload | None = None


# (A section or list sent as null is left to `handle`, like any other frame this shape does not take.)
_decode_frame = msgspec.json.Decoder(_Message, float_hook=exactjson.number_hook).decode


FEED = Saba()
