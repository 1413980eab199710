"""OddsPapi v4 WebSocket (`kind = "oddspapi-ws"`): fixture, bookmaker, price and score deltas.

Each message is one fixture, one bookmaker at most, and only what changed (absent = unchanged,
null = a value). A `players.<id>` object is always sent whole: one `price_ticks` row each.
Vendor documentation: https://oddspapi.io/en/docs/websocket-api (v4).

The socket has no replay: after a gap the REST side heals it (docs/resync.md). For every fixture
seen lately (or configured), `/v4/odds` (the WebSocket's shape: the same code derives its rows) and
`/v4/scores`; with `backfill`, `/v4/historical-odds` for the gap's window, at most 3 bookmakers a
call. Cooldowns per endpoint are the vendor's: 500 ms, 1000 ms and 5000 ms.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import msgspec

from warehouse import exactjson
from warehouse.feeds.contract import (
    ConnectSpec,
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
from warehouse.feeds.values import obj, parse_time, to_bool, to_decimal, to_float, to_int, to_text
from warehouse.options import setting
from warehouse.records import (
    ORIGIN_BACKFILL,
    ORIGIN_SNAPSHOT,
    FixtureChange,
    MarketChange,
    PriceTick,
    Record,
    ScoreChange,
)

_tuple_new = tuple.__new__
# OddsPapi's market and outcome ids mean the same for every fixture and bookmaker (its /v4/markets
# list); the stream never names them. Those this package names: 101, the full-time 1X2.
MARKET_1X2 = "101"
OUTCOME_NAMES: dict[str, dict[str, str]] = {MARKET_1X2: {"101": "Home", "102": "Draw", "103": "Away"}}
_HISTORY_FIELDS = frozenset(("price", "active", "limit", "createdAt"))
# The vendor's minimum interval between two calls of one endpoint (seconds), and its limit of
# bookmakers per historical-odds call.
COOLDOWN_S = {"/v4/odds": 0.5, "/v4/scores": 1.0, "/v4/historical-odds": 5.0}
HISTORY_BOOKMAKERS = 3


@dataclass(frozen=True, kw_only=True)
class Options:
    url: str = setting("the stream endpoint, e.g. wss://api.oddspapi.io/v4/ws")
    api_key_env: str = setting("environment variable holding the API key (sent as `apiKey`)", secret=True)
    rest_url: str = rest_url_setting("https://api.oddspapi.io", "/v4")
    resync: bool = resync_setting()
    resync_hours: float = setting("a resync fetches every fixture seen in this many hours", 24.0, positive=True)
    fixtures: tuple[str, ...] = setting("fixture ids a resync always fetches, besides those seen lately", ())
    bookmakers: tuple[str, ...] = setting("bookmakers REST calls ask for (default: every one of the plan; backfill:"
                                          " those seen for the fixture)", ())
    backfill: bool = setting("after a gap, also fetch the prices that changed during it (/v4/historical-odds,"
                             " 5 s per call of 3 bookmakers)", False)
    rest_calls_per_s: float = rest_calls_setting(5.0)
    rest_timeout_s: float = rest_timeout_setting()


class OddsPapi(Feed[Options]):
    kind = "oddspapi-ws"
    version = "2"  # 2: prices not above 1, and numbers beyond a double, are refused (exact values from the wire)
    options = Options
    default_silence_s = 120.0  # no heartbeat in v4: a quiet market is legitimate, so be patient
    doc = "OddsPapi v4 WebSocket: fixtures, prices and scores of many bookmakers"
    outcome_names = OUTCOME_NAMES

    def connect(self, options: Options, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        separator = "&" if "?" in options.url else "?"
        return ConnectSpec(transport="ws", url=options.url + separator + urlencode({"apiKey": secrets["api_key_env"]}))

    def adapter(self, source: str, options: Options) -> Adapter:
        return Adapter(source)

    def rest_policy(self, options: Options) -> RestPolicy:
        return RestPolicy(enabled=options.resync, calls_per_s=options.rest_calls_per_s,
                          timeout_s=options.rest_timeout_s, fixtures_hours=options.resync_hours,
                          bookmakers=options.backfill and not options.bookmakers)

    def resync(self, options: Options, secrets: Mapping[str, str], context: ResyncContext) -> list[RestRequest]:
        base = rest_base(options.url, options.rest_url)
        key = (("apiKey", secrets["api_key_env"]),)
        books = (("bookmakers", ",".join(options.bookmakers)),) if options.bookmakers else ()
        fixtures = list(dict.fromkeys((*options.fixtures, *context.fixtures)))
        requests = []
        for fixture in fixtures:
            requests.append(RestRequest(ORIGIN_SNAPSHOT, base, "/v4/odds", (("fixtureId", fixture), *books, *key),
                                        cooldown_s=COOLDOWN_S["/v4/odds"], covers=fixture))
            requests.append(RestRequest(ORIGIN_SNAPSHOT, base, "/v4/scores", (("fixtureId", fixture), *key),
                                        cooldown_s=COOLDOWN_S["/v4/scores"], covers=fixture))
        if options.backfill and context.gap_started is not None:
            window = (("from", context.gap_started.isoformat()), ("to", context.now.isoformat()))
            for fixture in fixtures:
                seen = options.bookmakers or context.fixtures.get(fixture, ())
                for chunk in _chunks(seen, HISTORY_BOOKMAKERS):
                    requests.append(RestRequest(
                        ORIGIN_BACKFILL, base, "/v4/historical-odds",
                        (("fixtureId", fixture), ("bookmakers", ",".join(chunk)), *key),
                        cooldown_s=COOLDOWN_S["/v4/historical-odds"], covers=fixture, scope=window))
        return requests

    def rest_adapter(self, source: str, options: Options, call: RestCall) -> RestAdapter:
        return RestAdapter(source, call)


def _chunks(items: Sequence[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


class Adapter:
    """Pure: one OddsPapi message → records. No per-connection state is needed. `origin`: the rows
    come from a REST answer (a /v4/odds snapshot has the WebSocket's shape).

    Every frame of the busiest feed runs through here, so it is written for speed (docs/performance.md,
    "Firehose"): objects are checked inline (`type(x) is dict`; `obj` is called only to raise its
    error), a level's other keys are gathered only when it has keys besides those read, and a
    PriceTick is made as the tuple it is. The checks and their order are those of `obj` and the value
    functions: a frame gives the same rows, or the same FrameError, as a plain walk would."""

    def __init__(self, source: str, origin: str | None = None) -> None:
        self.source = source
        self.origin = origin

    def handle(self, message: Any, received_at: datetime) -> Output:
        msg = message if type(message) is dict else obj(message, "message")
        fixture = to_text(msg.get("fixtureId"))
        if not fixture:
            raise FrameError("fixtureId missing")
        records: list[Record] = []
        parts: list[str] = []
        if len(msg) > ("fixtureId" in msg) + ("bookmakerOdds" in msg) + ("scores" in msg):
            metadata = {k: v for k, v in msg.items() if k not in ("fixtureId", "bookmakerOdds", "scores")}
            parts.append("fixture")
            records.append(self._fixture(received_at, fixture, metadata))
        books = msg.get("bookmakerOdds") or {}
        for bookmaker, book in (books if type(books) is dict else obj(books, "bookmakerOdds")).items():
            self._bookmaker(records, parts, received_at, fixture, bookmaker,
                            book if type(book) is dict else obj(book, "bookmakerOdds", bookmaker))
        if "scores" in msg:
            parts.append("score")
            records += self._scores(received_at, fixture, obj(msg["scores"], "scores"))
        return Output("+".join(parts) or "empty", records)  # each part once, in the order first seen

    def _fixture(self, at: datetime, fixture: str, changes: dict[str, Any]) -> FixtureChange:
        status = changes.get("statusId")
        return FixtureChange(
            at, self.source, fixture, "change",
            start_time=parse_time(changes["startTime"]) if "startTime" in changes else None,
            status=None if status is None else str(to_int(status)),
            source_ts=parse_time(changes.get("updatedAt")),
            changes=changes,
            origin=self.origin,
        )

    def _bookmaker(self, out: list[Record], parts: list[str], at: datetime, fixture: str, bookmaker: str,
                   book: dict[str, Any]) -> None:
        """The book's records into `out`, what they are into `parts`."""
        if len(book) > ("markets" in book):  # bookmakerFixtureId, fixturePath, anything else at this level
            if "bookmaker" not in parts:
                parts.append("bookmaker")
            out.append(FixtureChange(at, self.source, fixture, "change", bookmaker=bookmaker,
                                     changes={k: v for k, v in book.items() if k != "markets"}, origin=self.origin))
        markets = book.get("markets") or {}
        for market_id, market in (markets if type(markets) is dict else obj(markets, "markets")).items():
            if type(market) is not dict:
                obj(market, "markets", market_id)
            if len(market) > ("outcomes" in market):  # bookmakerMarketId and other market-level fields
                out.append(MarketChange(at, self.source, fixture, market_id, "change", bookmaker=bookmaker,
                                        attrs={k: v for k, v in market.items() if k != "outcomes"},
                                        origin=self.origin))
            outcomes = market.get("outcomes") or {}
            if type(outcomes) is not dict:
                obj(outcomes, "markets", market_id, "outcomes")
            for outcome_id, outcome in outcomes.items():
                if type(outcome) is not dict:
                    obj(outcome, "outcomes", outcome_id)
                players = outcome.get("players") or {}
                if type(players) is not dict:
                    obj(players, "outcomes", outcome_id, "players")
                for player_id, player in players.items():
                    out.append(self._tick(at, fixture, bookmaker, market_id, outcome_id, player_id,
                                          player if type(player) is dict else obj(player, "players", player_id)))
                if players and "price" not in parts:
                    parts.append("price")

    def _tick(self, at: datetime, fixture: str, bookmaker: str, market_id: str, outcome_id: str,
              player_id: str, player: dict[str, Any]) -> PriceTick:
        attrs = player.copy()  # the fields that are no column go to attrs
        price, active = attrs.pop("price", None), attrs.pop("active", None)
        limit, changed_at = attrs.pop("limit", None), attrs.pop("changedAt", None)
        # PriceTick's fields in order (records.py); tuple.__new__ skips the keyword handling of its __new__.
        return _tuple_new(PriceTick, (
            at, self.source, bookmaker, fixture, market_id, outcome_id,
            to_float(price, above=1),
            player_id, None, None,  # player_id, line, side
            to_bool(active),
            None,  # status
            to_decimal(limit),  # max_stake
            parse_time(changed_at),  # source_ts
            attrs or None,
            self.origin,
        ))

    # -- the typed walk: a price frame decoded straight into its shape -----------------------------

    def handle_text(self, data: bytes, received_at: datetime) -> Output | None:
        """A frame that only changes prices (the most of them), from its text: decoded into its shape
        (`_Message`, below) with the same number rule as `exactjson.loads`, which saves ~1 µs of a
        two-price frame's ~6 (docs/performance.md, "Firehose"). None for any other frame, and for one
        whose rows are refused: `handle` then takes it (decoded into dicts), and says why."""
        try:
            message = _decode_price_frame(data)
            fixture = to_text(message.fixtureId)
            if not fixture:
                return None
            records: list[Record] = []
            for bookmaker, book in (message.bookmakerOdds or {}).items():
                for market_id, market in (book.markets or {}).items():
                    for outcome_id, outcome in (market.outcomes or {}).items():
                        for player_id, player in (outcome.players or {}).items():
                            records.append(self._tick(received_at, fixture, bookmaker, market_id, outcome_id,
                                                      player_id, player))
        except Exception:  # not a price frame, or one to refuse: the general path decides, and says why
            return None
        return Output("price" if records else "empty", records)

    def _scores(self, at: datetime, fixture: str, scores: dict[str, Any]) -> list[ScoreChange]:
        return self.periods(at, fixture, obj(scores.get("periods") or {}, "scores.periods"))

    def periods(self, at: datetime, fixture: str, periods: dict[str, Any]) -> list[ScoreChange]:
        rows = []
        for period, values in periods.items():
            values = obj(values, "scores.periods", period)
            rest = {k: v for k, v in values.items()
                    if k not in ("participant1Score", "participant2Score", "updatedAt")}
            rows.append(ScoreChange(
                at, self.source, fixture, period=period,
                home_score=to_int(values.get("participant1Score")),
                away_score=to_int(values.get("participant2Score")),
                source_ts=parse_time(values.get("updatedAt")),
                attrs=rest or None,
                origin=self.origin,
            ))
        return rows


class RestAdapter:
    """Pure: one REST answer → records with `origin` set. /v4/odds has the WebSocket's shape (one
    fixture object, or a list of them); /v4/scores nests periods under `scores` (or, like the
    WebSocket, under `scores.periods`); /v4/historical-odds lists each player's prices, of which
    those created within the call's window (`from` < createdAt <= `to`: the gap) become rows."""

    def __init__(self, source: str, call: RestCall) -> None:
        self.source, self.call = source, call
        self.stream = Adapter(source, origin=call.origin)

    def handle(self, message: Any, received_at: datetime) -> Output:
        path = self.call.path
        items = message if isinstance(message, list) else [message]
        records: list[Record] = []
        for item in items:
            if path == "/v4/odds":
                records += self.stream.handle(item, received_at).records
            elif path == "/v4/scores":
                records += self._scores(received_at, obj(item, "answer"))
            elif path == "/v4/historical-odds":
                records += self._history(received_at, obj(item, "answer"))
            else:
                raise FrameError(f"no REST adapter for {path}")
        return Output(self.call.kind, records, detail={"items": len(items)})

    def _fixture(self, answer: dict[str, Any]) -> str:
        fixture = to_text(answer.get("fixtureId")) or self.call.params.get("fixtureId")
        if not fixture:
            raise FrameError("fixtureId missing")
        return fixture

    def _scores(self, at: datetime, answer: dict[str, Any]) -> list[ScoreChange]:
        scores = obj(answer.get("scores") or {}, "scores")
        periods = scores["periods"] if isinstance(scores.get("periods"), dict) else scores
        return self.stream.periods(at, self._fixture(answer), periods)

    def _history(self, at: datetime, answer: dict[str, Any]) -> list[PriceTick]:
        fixture = self._fixture(answer)
        since, until = parse_time(self.call.scope.get("from")), parse_time(self.call.scope.get("to"))
        books = answer.get("bookmakers", answer.get("bookmakerOdds"))
        rows = []
        for (bookmaker, market_id, outcome_id, player_id), history in _nested({"bookmakers": books}, _HISTORY_PATH):
            if not isinstance(history, list):
                raise FrameError(f"players.{player_id}: list of prices expected")
            for entry in history:
                entry = obj(entry, "players", player_id)
                created = parse_time(entry.get("createdAt"))
                if created is None or (since and created <= since) or (until and created > until):
                    continue
                attrs = {k: v for k, v in entry.items() if k not in _HISTORY_FIELDS}
                rows.append(PriceTick(
                    at, self.source, bookmaker, fixture, market_id, outcome_id,
                    price=to_float(entry.get("price"), above=1), player_id=player_id,
                    active=to_bool(entry.get("active")), max_stake=to_decimal(entry.get("limit")),
                    source_ts=created, attrs=attrs or None, origin=self.call.origin))
        return rows


# A /v4/historical-odds answer nests each player's prices: bookmakers → markets → outcomes → players.
_HISTORY_PATH = ("bookmakers", "markets", "outcomes", "players")


def _nested(node: dict[str, Any], path: Sequence[str]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Depth first, every (ids along `path`, value at its end) under `node`; FrameError where a level is no object."""
    name, rest = path[0], path[1:]
    for key, child in obj(node.get(name) or {}, name).items():
        if not rest:
            yield (key,), child
            continue
        for ids, value in _nested(obj(child, name, key), rest):
            yield (key, *ids), value


# -- a price frame's shape, for the typed walk (Adapter.handle_text) -------------------------------------
# Each level above the players is a Struct that takes no key besides the one the walk reads (a frame
# with any other is not a plain price frame: `handle` takes it, and makes its rows from those keys).
# A player is decoded as a dict, every number by exactjson's rule (the same hook): the values are
# those `exactjson.loads` gives, and `_tick` makes the row of either walk.


class _Outcome(msgspec.Struct, forbid_unknown_fields=True):
    players: dict[str, dict[str, Any]] | None = None


class _Market(msgspec.Struct, forbid_unknown_fields=True):
    outcomes: dict[str, _Outcome] | None = None


class _Book(msgspec.Struct, forbid_unknown_fields=True):
    markets: dict[str, _Market] | None = None


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    fixtureId: Any = None
    bookmakerOdds: dict[str, _Book] | None = None


_decode_price_frame = msgspec.json.Decoder(_Message, float_hook=exactjson.number_hook).decode


FEED = OddsPapi()
