"""The OddsPapi stream adapter as a plain walk of the message (the code before it was written for
speed, issue 28): the oracle tests/test_oddspapi.py holds warehouse.feeds.oddspapi.Adapter to — the
same rows, or the same FrameError, for any message. Not used by the product."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from warehouse.feeds.contract import FrameError, Output
from warehouse.feeds.oddspapi import Adapter
from warehouse.feeds.values import obj, parse_time, to_bool, to_decimal, to_float, to_text
from warehouse.records import FixtureChange, MarketChange, PriceTick, Record

_PRICE_FIELDS = frozenset(("price", "active", "limit", "changedAt"))


class PlainAdapter(Adapter):
    handle_text = None  # every frame decoded into dicts, as derive() did before the typed walk

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = obj(message, "message")
        fixture = to_text(msg.get("fixtureId"))
        if not fixture:
            raise FrameError("fixtureId missing")
        records: list[Record] = []
        parts: list[str] = []
        metadata = {k: v for k, v in msg.items() if k not in ("fixtureId", "bookmakerOdds", "scores")}
        if metadata:
            parts.append("fixture")
            records.append(self._fixture(received_at, fixture, metadata))
        for bookmaker, book in obj(msg.get("bookmakerOdds") or {}, "bookmakerOdds").items():
            parts += self._plain_bookmaker(records, received_at, fixture, bookmaker,
                                           obj(book, "bookmakerOdds", bookmaker))
        if "scores" in msg:
            parts.append("score")
            records += self._scores(received_at, fixture, obj(msg["scores"], "scores"))
        return Output("+".join(dict.fromkeys(parts)) or "empty", records)

    def _plain_bookmaker(self, out: list[Record], at: datetime, fixture: str, bookmaker: str,
                         book: dict[str, Any]) -> list[str]:
        parts = []
        info = {k: v for k, v in book.items() if k != "markets"}
        if info:
            parts.append("bookmaker")
            out.append(FixtureChange(at, self.source, fixture, "change", bookmaker=bookmaker, changes=info,
                                     origin=self.origin))
        for market_id, market in obj(book.get("markets") or {}, "markets").items():
            market = obj(market, "markets", market_id)
            market_info = {k: v for k, v in market.items() if k != "outcomes"}
            if market_info:
                out.append(MarketChange(at, self.source, fixture, market_id, "change", bookmaker=bookmaker,
                                        attrs=market_info, origin=self.origin))
            for outcome_id, outcome in obj(market.get("outcomes") or {}, "markets", market_id, "outcomes").items():
                players = obj(obj(outcome, "outcomes", outcome_id).get("players") or {},
                              "outcomes", outcome_id, "players")
                for player_id, player in players.items():
                    out.append(self._plain_tick(at, fixture, bookmaker, market_id, outcome_id, player_id,
                                                obj(player, "players", player_id)))
                if players:
                    parts.append("price")
        return parts

    def _plain_tick(self, at: datetime, fixture: str, bookmaker: str, market_id: str, outcome_id: str,
                    player_id: str, player: dict[str, Any]) -> PriceTick:
        attrs = {k: v for k, v in player.items() if k not in _PRICE_FIELDS}
        return PriceTick(
            at, self.source, bookmaker, fixture, market_id, outcome_id,
            price=to_float(player.get("price"), above=1),
            player_id=player_id,
            active=to_bool(player.get("active")),
            max_stake=to_decimal(player.get("limit")),
            source_ts=parse_time(player.get("changedAt")),
            attrs=attrs or None,
            origin=self.origin,
        )
