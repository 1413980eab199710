"""The Saba adapter as a plain walk of the message (the code before it was written for speed, issue
28): the oracle tests/test_saba_fast.py holds warehouse.feeds.saba.Adapter to — the same rows, the
same FrameError and the same market → event map after any frame. Not used by the product."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from warehouse.feeds.contract import FATAL, INITIAL, RESET, RETRY, RETRY_LONG, Control, FrameError, Output
from warehouse.feeds.saba import BOOKMAKER, Adapter, _id, _list
from warehouse.feeds.values import obj, to_decimal, to_float
from warehouse.records import FixtureChange, MarketChange, PriceTick, Record


class PlainAdapter(Adapter):
    handle_text = None  # every frame decoded into dicts, as derive() did before the typed walk

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
            records += self._plain_market(received_at, obj(market, "markets.add[]"), "add")
        for market in _list(markets, "change"):
            records += self._plain_market(received_at, obj(market, "markets.change[]"), "change")
        control: Control | None = INITIAL if status == 1 else RESET if status == 3 else None
        return Output(f"status-{status}", records, control=control, detail=detail if control else None)

    def _plain_market(self, at: datetime, market: dict[str, Any], action: str) -> list[Record]:
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
