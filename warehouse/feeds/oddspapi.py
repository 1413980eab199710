"""OddsPapi v4 WebSocket (`kind = "oddspapi-ws"`): fixture, bookmaker, price and score deltas.

Each message is one fixture, one bookmaker at most, and only what changed (absent = unchanged,
null = a value). A `players.<id>` object is always sent whole: one `price_ticks` row each.
Vendor documentation: https://oddspapi.io/en/docs/websocket-api (v4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from warehouse.feeds.contract import ConnectSpec, Feed, FrameError, Output
from warehouse.feeds.values import obj, parse_time, to_bool, to_decimal, to_float, to_int, to_text
from warehouse.options import setting
from warehouse.records import FixtureChange, MarketChange, PriceTick, Record, ScoreChange

_PRICE_FIELDS = frozenset(("price", "active", "limit", "changedAt"))  # columns; the rest go to attrs
# OddsPapi's market and outcome ids mean the same for every fixture and bookmaker (its /v4/markets
# list); the stream never names them. Those this package names: 101, the full-time 1X2.
MARKET_1X2 = "101"
OUTCOME_NAMES: dict[str, dict[str, str]] = {MARKET_1X2: {"101": "Home", "102": "Draw", "103": "Away"}}


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the stream endpoint, e.g. wss://api.oddspapi.io/v4/ws")
    api_key_env: str = setting("environment variable holding the API key (sent as `apiKey`)", secret=True)


class OddsPapi(Feed[Options]):
    kind = "oddspapi-ws"
    version = "1"
    options = Options
    default_silence_s = 120.0  # no heartbeat in v4: a quiet market is legitimate, so be patient
    doc = "OddsPapi v4 WebSocket: fixtures, prices and scores of many bookmakers"

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        separator = "&" if "?" in options.url else "?"
        return ConnectSpec(transport="ws", url=options.url + separator + urlencode({"apiKey": secrets["api_key_env"]}))

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source)


class Adapter:
    """Pure: one OddsPapi message → records. No per-connection state is needed."""

    def __init__(self, source: str) -> None:
        self.source = source

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
            parts += self._bookmaker(records, received_at, fixture, bookmaker, obj(book, "bookmakerOdds", bookmaker))
        if "scores" in msg:
            parts.append("score")
            records += self._scores(received_at, fixture, obj(msg["scores"], "scores"))
        return Output("+".join(dict.fromkeys(parts)) or "empty", records)

    def _fixture(self, at: datetime, fixture: str, changes: dict[str, Any]) -> FixtureChange:
        status = changes.get("statusId")
        return FixtureChange(
            at, self.source, fixture, "change",
            start_time=parse_time(changes["startTime"]) if "startTime" in changes else None,
            status=None if status is None else str(to_int(status)),
            source_ts=parse_time(changes.get("updatedAt")),
            changes=changes,
        )

    def _bookmaker(self, out: list[Record], at: datetime, fixture: str, bookmaker: str,
                   book: dict[str, Any]) -> list[str]:
        parts = []
        info = {k: v for k, v in book.items() if k != "markets"}
        if info:  # bookmakerFixtureId, fixturePath, and anything else sent at this level
            parts.append("bookmaker")
            out.append(FixtureChange(at, self.source, fixture, "change", bookmaker=bookmaker, changes=info))
        for market_id, market in obj(book.get("markets") or {}, "markets").items():
            market = obj(market, "markets", market_id)
            market_info = {k: v for k, v in market.items() if k != "outcomes"}
            if market_info:  # bookmakerMarketId and other market-level fields
                out.append(MarketChange(at, self.source, fixture, market_id, "change", bookmaker=bookmaker,
                                        attrs=market_info))
            for outcome_id, outcome in obj(market.get("outcomes") or {}, "markets", market_id, "outcomes").items():
                players = obj(obj(outcome, "outcomes", outcome_id).get("players") or {},
                              "outcomes", outcome_id, "players")
                for player_id, player in players.items():
                    out.append(self._tick(at, fixture, bookmaker, market_id, outcome_id, player_id,
                                          obj(player, "players", player_id)))
                if players:
                    parts.append("price")
        return parts

    def _tick(self, at: datetime, fixture: str, bookmaker: str, market_id: str, outcome_id: str,
              player_id: str, player: dict[str, Any]) -> PriceTick:
        attrs = {k: v for k, v in player.items() if k not in _PRICE_FIELDS}
        return PriceTick(
            at, self.source, bookmaker, fixture, market_id, outcome_id,
            price=to_float(player.get("price")),
            player_id=player_id,
            active=to_bool(player.get("active")),
            max_stake=to_decimal(player.get("limit")),
            source_ts=parse_time(player.get("changedAt")),
            attrs=attrs or None,
        )

    def _scores(self, at: datetime, fixture: str, scores: dict[str, Any]) -> list[ScoreChange]:
        rows = []
        for period, values in obj(scores.get("periods") or {}, "scores.periods").items():
            values = obj(values, "scores.periods", period)
            rest = {k: v for k, v in values.items()
                    if k not in ("participant1Score", "participant2Score", "updatedAt")}
            rows.append(ScoreChange(
                at, self.source, fixture, period=period,
                home_score=to_int(values.get("participant1Score")),
                away_score=to_int(values.get("participant2Score")),
                source_ts=parse_time(values.get("updatedAt")),
                attrs=rest or None,
            ))
        return rows


FEED = OddsPapi()
