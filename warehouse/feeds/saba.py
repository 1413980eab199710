"""Saba OddsDirect GetEvents push over SSE (`kind = "saba-sse"`).

Status 1 (initial data) and 3 (reset: the server lost our Last-Event-ID) carry the full state in
`add`; 0 carries deltas; 97/98 are configuration errors; 99/100 mean retry later. Within a frame
the order is events then markets, each remove → add → change. One `price_ticks` row per
selection. Vendor documentation: Saba OddsDirect "GetEvents (Push)" API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

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
from warehouse.records import FixtureChange, MarketChange, PriceTick, Record, ScoreChange

BOOKMAKER = "saba"
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
    version = "2"  # 2: numbers exact from the wire; prices no double holds, and odds that are no price, refused
    options = Options
    default_silence_s = 20.0  # the server sends a keep-alive every 5 s
    doc = "Saba OddsDirect GetEvents push (Server-Sent Events), resumable by Last-Event-ID"

    def validate(self, options: Options) -> str | None:
        if options.token_env or (options.vendor_id and options.vendor_member_id_env):
            return None
        return "needs token_env, or vendor_id with vendor_member_id_env to log in"

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
    """Pure: one SSE data object → records. Remembers which event each market belongs to."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.event_of_market: dict[str, str] = {}

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = obj(message, "data")
        status = msg.get("status")
        detail = {"status": status, "message": msg.get("message")}
        if status in (97, 98):
            return Output(f"status-{status}", control=FATAL, detail=detail)
        if status == 99:
            return Output("status-99", control=RETRY_LONG, detail=detail)
        if status == 100:
            return Output("status-100", control=RETRY, detail=detail)
        if status not in (0, 1, 3):
            raise FrameError(f"unknown status {status!r}")
        if status in (1, 3):
            self.event_of_market.clear()  # `add` is the whole state from here on
        payload = obj(msg.get("payload") or {}, "payload")
        events = obj(payload.get("events") or {}, "payload.events")
        markets = obj(payload.get("markets") or {}, "payload.markets")
        records: list[Record] = []
        for event_id in _list(events, "remove"):
            records.append(FixtureChange(received_at, self.source, _id(event_id, "eventId"), "remove"))
        for event in _list(events, "add"):
            records += self._event(received_at, obj(event, "events.add[]"), "add")
        for event in _list(events, "change"):
            records += self._event(received_at, obj(event, "events.change[]"), "change")
        for market_id in _list(markets, "remove"):
            market_id = _id(market_id, "marketId")
            fixture = self.event_of_market.pop(market_id, "")
            records.append(MarketChange(received_at, self.source, fixture, market_id, "remove", bookmaker=BOOKMAKER))
        for market in _list(markets, "add"):
            records += self._market(received_at, obj(market, "markets.add[]"), "add")
        for market in _list(markets, "change"):
            records += self._market(received_at, obj(market, "markets.change[]"), "change")
        control: Control | None = INITIAL if status == 1 else RESET if status == 3 else None
        return Output(f"status-{status}", records, control=control, detail=detail if control else None)

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

    def _market(self, at: datetime, market: dict[str, Any], action: str) -> list[Record]:
        market_id = _id(market.get("marketId"), "marketId")
        if market.get("eventId") is not None:
            self.event_of_market[market_id] = _id(market["eventId"], "eventId")
        fixture = self.event_of_market.get(market_id, "")
        status = market.get("marketStatus")
        status = status if isinstance(status, str) else None
        active = None if status is None else status.lower() == "running"
        max_stake = to_decimal(market.get("maxBet"))
        rows: list[Record] = [MarketChange(
            at, self.source, fixture, market_id, action, bookmaker=BOOKMAKER, status=status,
            attrs={k: v for k, v in market.items() if k != "selections"},
        )]
        selections = market.get("selections") or []
        if not isinstance(selections, list):
            raise FrameError(f"selections must be a list, got {type(selections).__name__}")
        for selection in selections:
            selection = obj(selection, "selections[]")
            odds = obj(selection.get("oddsPrice") or {}, "oddsPrice")
            attrs = {k: v for k, v in selection.items() if k not in ("key", "point", "oddsPrice")}
            attrs.update({k: v for k, v in odds.items() if k != "decimalPrice"})
            if "betType" in market:
                attrs["betType"] = market["betType"]
            rows.append(PriceTick(
                at, self.source, BOOKMAKER, fixture, market_id, _id(selection.get("key"), "selection key"),
                price=to_float(odds.get("decimalPrice"), above=1),
                line=to_decimal(selection.get("point")),
                active=active, status=status, max_stake=max_stake, attrs=attrs or None,
            ))
        return rows


def _list(section: dict[str, Any], key: str) -> list[Any]:
    value = section.get(key) or []
    if not isinstance(value, list):
        raise FrameError(f"{key}: list expected, got {type(value).__name__}")
    return value


def _id(value: Any, what: str) -> str:
    text = to_text(value)
    if not text:
        raise FrameError(f"{what} missing")
    return text


FEED = Saba()
