"""The REST side of the feeds, pure: the calls a resync plans, and the rows each answer gives."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.feedkit import options
from warehouse.collect.resync import Pacer, _named_retry
from warehouse.feeds.contract import RestCall, ResyncContext, is_rest_kind, rest_base, rest_endpoint
from warehouse.feeds.derive import derive
from warehouse.feeds.registry import FEEDS
from warehouse.records import AccountChange, BetChange, FixtureChange, OrderChange, PriceTick, ScoreChange

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GAP = NOW - timedelta(minutes=5)
ODDSPAPI, MM = FEEDS["oddspapi-ws"], FEEDS["mm-ws"]


def test_the_rest_base_is_the_streams_host_unless_configured() -> None:
    assert rest_base("wss://api.oddspapi.io/v4/ws", "") == "https://api.oddspapi.io"
    assert rest_base("wss://mmapi.55-tech.com/ws/subscribe", "") == "https://mmapi.55-tech.com"
    assert rest_base("ws://127.0.0.1:8765/v4/ws", "") == "http://127.0.0.1:8765"
    assert rest_base("wss://x/v4/ws", "https://rest.example/") == "https://rest.example"


@pytest.mark.parametrize(("kind", "stream", "forms", "expected"), [
    ("oddspapi-ws", "wss://api.oddspapi.io/v4/ws",
     ["", "https://api.oddspapi.io", "https://api.oddspapi.io/", "https://api.oddspapi.io/v4",
      "https://api.oddspapi.io/v4/"],
     ["https://api.oddspapi.io/v4/odds", "https://api.oddspapi.io/v4/scores"]),
    ("mm-ws", "wss://mmapi.55-tech.com/ws/subscribe",
     ["", "https://mmapi.55-tech.com", "https://mmapi.55-tech.com/api/v1", "https://mmapi.55-tech.com/api/v1/",
      "https://mmapi.55-tech.com/api"],
     ["https://mmapi.55-tech.com/api/v1/orders", "https://mmapi.55-tech.com/api/v1/bets",
      "https://mmapi.55-tech.com/api/v1/accounts"]),
])
def test_rest_url_may_be_the_host_or_the_versioned_base_the_vendor_documents(
        kind: str, stream: str, forms: list[str], expected: list[str]) -> None:
    feed = FEEDS[kind]
    context = ResyncContext(NOW, GAP, {"id1": ()})  # OddsPapi: one fixture seen
    for form in forms:
        plan = feed.resync(options(kind, url=stream, rest_url=form), {"api_key_env": "k"}, context)
        assert [r.url for r in plan] == expected, form


def test_a_prefix_of_the_base_that_is_no_version_of_the_path_is_kept() -> None:
    assert rest_endpoint("https://proxy.example/oddspapi", "/v4/odds") == "https://proxy.example/oddspapi/v4/odds"
    assert rest_endpoint("https://proxy.example/oddspapi/v4", "/v4/odds") == "https://proxy.example/oddspapi/v4/odds"
    assert rest_endpoint("http://127.0.0.1:8765/v5", "/v4/odds") == "http://127.0.0.1:8765/v5/v4/odds"


def test_a_stored_request_reads_back_as_the_call_it_was() -> None:
    call = RestCall("backfill", "/v4/historical-odds", {"fixtureId": "id1", "bookmakers": "a,b", "apiKey": "***"},
                    {"from": GAP.isoformat(), "to": NOW.isoformat()})
    assert call.kind == "backfill:/v4/historical-odds"
    assert call.event_id.startswith("GET /v4/historical-odds?fixtureId=id1&bookmakers=a%2Cb&apiKey=%2A%2A%2A#from=")
    assert RestCall.stored(call.kind, call.event_id) == call
    assert is_rest_kind("snapshot:/v4/odds") and is_rest_kind("backfill:/x")
    assert not is_rest_kind("price") and not is_rest_kind("orders:INSERT") and not is_rest_kind("snapshot")
    with pytest.raises(ValueError, match="not a stored REST answer"):
        RestCall.stored("orders:INSERT", "81723")


def test_oddspapi_plans_odds_and_scores_for_every_fixture_and_backfill_by_three_bookmakers() -> None:
    opts = options("oddspapi-ws", url="wss://api.oddspapi.io/v4/ws", fixtures=("id9",), backfill=True)
    context = ResyncContext(NOW, GAP, {"id1": ("a", "b", "c", "d"), "id9": ()})
    plan = ODDSPAPI.resync(opts, {"api_key_env": "secret-key"}, context)
    assert [(r.origin, r.path, dict(r.params).get("fixtureId"), r.cooldown_s) for r in plan] == [
        ("snapshot", "/v4/odds", "id9", 0.5), ("snapshot", "/v4/scores", "id9", 1.0),  # configured ones first
        ("snapshot", "/v4/odds", "id1", 0.5), ("snapshot", "/v4/scores", "id1", 1.0),
        ("backfill", "/v4/historical-odds", "id1", 5.0), ("backfill", "/v4/historical-odds", "id1", 5.0)]
    assert [dict(r.params)["bookmakers"] for r in plan[4:]] == ["a,b,c", "d"]
    assert dict(plan[4].scope) == {"from": GAP.isoformat(), "to": NOW.isoformat()}
    assert all(r.base == "https://api.oddspapi.io" and dict(r.params)["apiKey"] == "secret-key" for r in plan)
    policy = ODDSPAPI.rest_policy(opts)
    assert policy is not None and policy.bookmakers and policy.fixtures_hours == 24.0
    # no backfill before anything was stored: there is no gap to fill
    assert all(r.origin == "snapshot" for r in ODDSPAPI.resync(opts, {"api_key_env": "k"},
                                                               ResyncContext(NOW, None, context.fixtures)))


def test_mm_plans_orders_and_bets_since_the_gap_less_a_margin_and_the_accounts() -> None:
    opts = options("mm-ws", url="wss://mmapi.55-tech.com/ws/subscribe")
    plan = MM.resync(opts, {"api_key_env": "uuid-key"}, ResyncContext(NOW, GAP))
    assert [(r.path, r.page_size) for r in plan] == [("/api/v1/orders", 500), ("/api/v1/bets", 500),
                                                      ("/api/v1/accounts", None)]
    assert dict(plan[0].params) == {"fromDate": "2026-11-22T11:54:00.000Z", "toDate": "2026-11-22T12:00:00.000Z"}
    assert all(dict(r.headers) == {"X-API-Key": "uuid-key"} for r in plan)
    first = MM.resync(opts, {"api_key_env": "k"}, ResyncContext(NOW, None))  # nothing stored: resync_hours back
    assert dict(first[0].params)["fromDate"] == "2026-11-21T11:59:00.000Z"
    only_orders = MM.resync(options("mm-ws", channels=("orders",)), {"api_key_env": "k"}, ResyncContext(NOW, GAP))
    assert [r.path for r in only_orders] == ["/api/v1/orders"]


def rest(feed_kind: str, kind: str, event_id: str, body: bytes, at: datetime = NOW):
    feed = FEEDS[feed_kind]
    adapter = feed.rest_adapter("src", options(feed_kind), RestCall.stored(kind, event_id))
    return derive(adapter, feed_kind, body, received_at=at, source="src", connection_id=__import__("uuid").uuid4(),
                  seq=1, event_id=event_id, max_frame_bytes=2**20, kind=kind)


def test_an_odds_snapshot_is_derived_by_the_stream_code_with_origin_set() -> None:
    body = (b'{"fixtureId":"id1","statusId":1,"startTime":"2026-11-22T13:00:00+00:00","bookmakerOdds":{"pinnacle":'
            b'{"bookmakerIsActive":true,"markets":{"101":{"marketActive":true,"outcomes":{"101":{"players":{"0":'
            b'{"price":2.1,"active":true,"limit":500,"changedAt":"2026-11-22T11:58:00+00:00","priceAmerican":110}}}}}}}}}')
    derived = rest("oddspapi-ws", "snapshot:/v4/odds", "GET /v4/odds?fixtureId=id1&apiKey=***", body)
    assert derived.raw.kind == "snapshot:/v4/odds" and derived.output is not None
    tick = next(r for r in derived.records if isinstance(r, PriceTick))
    assert (tick.price, tick.max_stake, tick.origin, tick.attrs) == (2.1, Decimal(500), "snapshot",
                                                                    {"priceAmerican": 110})
    assert tick.source_ts == datetime(2026, 11, 22, 11, 58, tzinfo=UTC)
    fixture = next(r for r in derived.records if isinstance(r, FixtureChange) and r.bookmaker is None)
    assert fixture.start_time == datetime(2026, 11, 22, 13, tzinfo=UTC) and fixture.origin == "snapshot"
    assert all(r.origin == "snapshot" for r in derived.records)  # type: ignore[union-attr]


def test_scores_are_read_under_scores_or_scores_periods() -> None:
    for body in (b'{"fixtureId":"id1","scores":{"0":{"participant1Score":2,"participant2Score":1}}}',
                 b'{"fixtureId":"id1","scores":{"periods":{"0":{"participant1Score":2,"participant2Score":1}}}}'):
        derived = rest("oddspapi-ws", "snapshot:/v4/scores", "GET /v4/scores?fixtureId=id1&apiKey=***", body)
        assert derived.records == [ScoreChange(NOW, "src", "id1", period="0", home_score=2, away_score=1,
                                               origin="snapshot")]


def test_historical_odds_keep_the_prices_created_within_the_gap() -> None:
    call = RestCall("backfill", "/v4/historical-odds", {"fixtureId": "id1", "bookmakers": "pinnacle"},
                    {"from": GAP.isoformat(), "to": NOW.isoformat()})
    prices = [{"createdAt": (GAP + timedelta(seconds=s)).isoformat(), "price": p, "limit": None, "active": True,
               "exchangeMeta": {}} for s, p in ((-10, 1.9), (0, 2.0), (60, 2.1), (300, 2.2), (301, 2.3))]
    body = __import__("orjson").dumps({"fixtureId": "id1", "bookmakers": {"pinnacle": {"markets": {"101": {
        "outcomes": {"101": {"players": {"0": prices}}}}}}}})
    derived = rest("oddspapi-ws", call.kind, call.event_id, body)
    assert [(t.price, t.source_ts, t.origin, t.received_at) for t in derived.records] == [  # type: ignore[union-attr]
        (2.1, GAP + timedelta(seconds=60), "backfill", NOW), (2.2, NOW, "backfill", NOW)]


def test_historical_odds_are_read_depth_first_and_say_which_level_does_not_fit() -> None:
    call = RestCall("backfill", "/v4/historical-odds", {"fixtureId": "id1"}, {"from": GAP.isoformat(),
                                                                              "to": NOW.isoformat()})
    dumps = __import__("orjson").dumps

    def answer(books: object) -> object:
        return rest("oddspapi-ws", call.kind, call.event_id, dumps({"fixtureId": "id1", "bookmakers": books}))

    def price(seconds: int, value: float) -> dict[str, object]:
        return {"createdAt": (GAP + timedelta(seconds=seconds)).isoformat(), "price": value}

    def book(*markets: str) -> dict[str, object]:
        return {"markets": {m: {"outcomes": {o: {"players": {"0": [price(-1, 9.0), price(60, float(f"{m}.{o}"))]}}
                                             for o in ("1", "2")}} for m in markets}}

    derived = answer({"pin": book("3", "4"), "bet": book("5")})
    assert [(t.bookmaker, t.market_id, t.outcome_id, t.player_id, t.price)  # type: ignore[union-attr]
            for t in derived.records] == [("pin", "3", "1", "0", 3.1), ("pin", "3", "2", "0", 3.2),
                                          ("pin", "4", "1", "0", 4.1), ("pin", "4", "2", "0", 4.2),
                                          ("bet", "5", "1", "0", 5.1), ("bet", "5", "2", "0", 5.2)]
    def players(value: object) -> dict[str, object]:
        return {"pin": {"markets": {"3": {"outcomes": {"1": {"players": value}}}}}}

    for books, reason in [
        ("x", "bookmakers: object expected, got str"),
        ({"pin": 1}, "bookmakers.pin: object expected, got int"),
        ({"pin": {"markets": [1]}}, "markets: object expected, got list"),
        ({"pin": {"markets": {"3": "x"}}}, "markets.3: object expected, got str"),
        ({"pin": {"markets": {"3": {"outcomes": {"1": None}}}}}, "outcomes.1: object expected, got NoneType"),
        (players(2), "players: object expected, got int"),
        (players({"0": {}}), "players.0: list of prices expected"),
        (players({"0": [1]}), "players.0: object expected, got int"),
        ({"pin": book("3"), "bet": 0}, "bookmakers.bet: object expected, got int"),  # the first fault met, in order
    ]:
        (quarantine,) = answer(books).records
        assert quarantine.reason == f"does not fit the oddspapi-ws schema: {reason}", books  # type: ignore[union-attr]


def test_mm_pages_become_snapshot_rows_dated_by_updated_at() -> None:
    orders = (b'[{"orderId":7,"fixtureId":"id1","orderStatus":"FILLED","orderStake":100,"matchedStake":100,'
              b'"orderCents":0.45,"matchedAt":"2026-11-22T11:57:00Z","updatedAt":"2026-11-22T11:57:01Z"}]')
    derived = rest("mm-ws", "snapshot:/api/v1/orders", "GET /api/v1/orders?page=1&pageSize=500", orders)
    (order,) = derived.records
    assert isinstance(order, OrderChange) and (order.event, order.order_id, order.order_status) == (
        "SNAPSHOT", "7", "FILLED")
    assert order.source_ts == datetime(2026, 11, 22, 11, 57, 1, tzinfo=UTC) and order.origin == "snapshot"
    assert derived.output is not None and derived.output.detail == {"items": 1}
    bets = rest("mm-ws", "snapshot:/api/v1/bets", "GET /api/v1/bets", b'{"data":[{"betId":70,"orderId":7}]}')
    assert [type(r) for r in bets.records] == [BetChange] and bets.records[0].origin == "snapshot"  # type: ignore
    accounts = rest("mm-ws", "snapshot:/api/v1/accounts", "GET /api/v1/accounts",
                    b'[{"accountId":"polymarket-main","balance":9900}]')
    assert [type(r) for r in accounts.records] == [AccountChange]
    bad = rest("mm-ws", "snapshot:/api/v1/orders", "GET /api/v1/orders", b'{"detail":"no"}')
    assert bad.output is None and bad.raw.kind == "snapshot:/api/v1/orders"  # quarantined, kind kept for replay


def test_a_429_names_its_delay_in_its_body_or_its_header() -> None:
    assert _named_retry(httpx.Headers({"Retry-After": "3"}), b'{"error":{"retryMs":450}}') == 0.45
    assert _named_retry(httpx.Headers({"Retry-After": "3"}), b'{"retryMs":1200}') == 1.2
    assert _named_retry(httpx.Headers({"Retry-After": "3"}), b'{"detail":"Rate limit exceeded"}') == 3.0
    assert _named_retry(httpx.Headers(), b"not json") is None


def test_the_pacer_keeps_calls_per_second_cooldowns_from_the_answer_and_named_delays() -> None:
    now = [100.0]
    pacer = Pacer(2.0, clock=lambda: now[0])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    async def main() -> None:
        original = asyncio.sleep
        asyncio.sleep = sleep  # type: ignore[assignment]
        try:
            await pacer.wait("/a")  # free
            pacer.answered("/a", 1.0)
            await pacer.wait("/b")  # the overall cap: 0.5 s after the first call
            pacer.answered("/b", 0.0)
            await pacer.wait("/a")  # the cooldown of /a since its answer (and 20 ms)
            pacer.refused("/b", 3.0)
            await pacer.wait("/b")
        finally:
            asyncio.sleep = original  # type: ignore[assignment]

    asyncio.run(main())
    assert slept == [0.5, 0.52, 3.0]
