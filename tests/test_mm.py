"""55-tech MM WebSocket through the live path: seed broadcasts, handshake, keep-alive, errors, limits."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.collecting import after, assert_secret_nowhere, collect_live, fast, feeds_from_toml
from tests.conftest import query
from warehouse.collect.service import collect
from warehouse.config import ConfigError, WriterSettings
from warehouse.simulate.mm import CHANNELS, MmSimulator

KEY = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

# The examples of the vendor's page (shared/seeds/mm-websocket-55tech.txt), verbatim.
PARTIAL = {"type": "broadcast", "channel": "orders", "event": "UPDATE", "payload": {
    "orderId": 123, "orderStatus": "FILLED", "matchedStake": 100.0, "matchedAt": "2026-02-15T10:30:05Z"},
    "old": {"orderStatus": "PLACED", "matchedStake": 0}}
FILL = {"type": "broadcast", "channel": "orders", "event": "UPDATE", "payload": {
    "orderId": 123, "fixtureId": "id1000000861624412", "outcomeId": 161, "exchange": "polymarket",
    "exchangeOrderId": "0x1a2b3c...", "orderStatus": "FILLED", "matchedStatus": "FULLY_MATCHED", "orderCents": 0.45,
    "orderStake": 100.0, "matchedStake": 100.0, "matchedAt": "2026-02-15T10:30:05Z"},
    "old": {"orderStatus": "PLACED", "matchedStatus": "NOT_MATCHED", "matchedStake": 0}}
BET = {"type": "broadcast", "channel": "bets", "event": "INSERT", "payload": {
    "betId": 456, "orderId": 123, "client": "your-client", "bookmaker": "vertex", "placedPrice": 1.808,
    "placedStake": 100.0, "betStatus": "placed", "sentData": {"requestId": "a1b2c3d4", "eventId": 98765,
    "price": 1.808, "amount": 100.0, "side": "1"}, "receivedData": {"betId": "789", "status": "U"},
    "placedAt": "2026-02-15T10:30:08Z"}}
SCORE = {"type": "broadcast", "channel": "scores", "event": "UPDATE", "payload": {
    "fixtureId": "id1000000861624412", "live": True, "statusId": 1, "currentPeriod": "下半场", "currentMinute": 67,
    "scores": {"home": 2, "away": 1, "period1Home": 1, "period1Away": 0}}}
EMERGENCY = {"type": "broadcast", "channel": "emergency", "event": "UPDATE",
             "payload": {"emergency": True, "reason": "手动触发", "triggeredAt": "2026-02-15T10:30:00Z"}}
SEED = [orjson.dumps(m) for m in (PARTIAL, FILL, BET, SCORE, EMERGENCY)]


def toml(url: str, name: str = "mm", env: str = "MM_KEY", **tuning: object) -> str:
    tuning = {"resync": "false", **tuning}  # the stream alone: healing gaps over REST is tests/test_resync.py's
    return (f'[[feeds]]\nname = "{name}"\nkind = "mm-ws"\nurl = "{url}"\napi_key_env = "{env}"\n'
            f"{fast(**tuning)}\n")


def run(simulator: MmSimulator, db_url: str, tmp_path: Path, until, env: dict[str, str] | None = None,
        **tuning: object) -> None:
    collect_live(simulator, db_url, tmp_path, lambda url: toml(url, **tuning), env or {"MM_KEY": KEY}, until)


def test_seed_broadcasts_give_exactly_the_rows_they_should(db_url: str, tmp_path: Path) -> None:
    simulator = MmSimulator({KEY: ("orders", "bets", "scores", "emergency")}, script=SEED)
    run(simulator, db_url, tmp_path, lambda: query(db_url, "SELECT count(*) FROM raw_messages")[0][0] >= 6)
    subscribe = simulator.received[0][0]
    assert subscribe == {"type": "subscribe", "apiKey": KEY, "channels": list(CHANNELS)}
    (detail,), = query(db_url, "SELECT detail FROM collector_events WHERE event = 'subscribe'")
    assert detail == {"subscription_id": 1, "asked": list(CHANNELS),
                      "granted": ["orders", "bets", "scores", "emergency"], "refused": ["accounts"]}
    assert query(db_url, "SELECT event, order_id, fixture_id, outcome_id, exchange, exchange_order_id,"
                         " order_status, matched_status, price, stake, matched_stake, source_ts, payload, old"
                         " FROM order_changes ORDER BY raw_id") == [
        # a partial payload: only what changed is promoted, the rest stays null (absent ≠ null)
        ("UPDATE", "123", None, None, None, None, "FILLED", None, None, None, Decimal("100.0"),
         datetime(2026, 2, 15, 10, 30, 5, tzinfo=UTC), PARTIAL["payload"], PARTIAL["old"]),
        ("UPDATE", "123", "id1000000861624412", "161", "polymarket", "0x1a2b3c...", "FILLED", "FULLY_MATCHED",
         Decimal("0.45"), Decimal("100.0"), Decimal("100.0"), datetime(2026, 2, 15, 10, 30, 5, tzinfo=UTC),
         FILL["payload"], FILL["old"])]
    assert query(db_url, "SELECT event, bet_id, order_id, bookmaker, bet_status, price, stake, source_ts, payload, old"
                         " FROM bet_changes") == [
        ("INSERT", "456", "123", "vertex", "placed", Decimal("1.808"), Decimal("100.0"),
         datetime(2026, 2, 15, 10, 30, 8, tzinfo=UTC), BET["payload"], None)]
    assert query(db_url, "SELECT fixture_id, period, home_score, away_score, minute, live, status, attrs"
                         " FROM score_changes") == [
        ("id1000000861624412", "下半场", 2, 1, 67, True, "1", {"period1Home": 1, "period1Away": 0})]
    assert query(db_url, "SELECT emergency, reason, source_ts, payload FROM emergency_events") == [
        (True, "手动触发", datetime(2026, 2, 15, 10, 30, tzinfo=UTC), EMERGENCY["payload"])]


def test_pings_are_answered_and_heartbeats_keep_a_quiet_connection_alive(db_url: str, tmp_path: Path) -> None:
    simulator = MmSimulator({KEY: CHANNELS}, script=[b'{"type":"heartbeat"}'], heartbeat_s=0.3)
    run(simulator, db_url, tmp_path,
        lambda: sum(m.get("type") == "ping" for m in simulator.received[0]) >= 3 if simulator.received else False,
        client_ping_s=0.2, silence_timeout_s=1.0)
    kinds = {k for (k,) in query(db_url, "SELECT DISTINCT kind FROM raw_messages")}
    assert {"subscribed", "pong", "heartbeat"} <= kinds
    assert query(db_url, "SELECT count(*) FROM collector_events WHERE event = 'watchdog_timeout'") == [(0,)]
    assert query(db_url, "SELECT count(DISTINCT connection_id) FROM raw_messages") == [(1,)]
    assert simulator.received[0][-1] == {"type": "unsubscribe"}, "a clean stop unsubscribes"


def test_generated_orders_fill_at_the_shared_market_prices(db_url: str, tmp_path: Path) -> None:
    simulator = MmSimulator({KEY: CHANNELS}, rate=200)
    run(simulator, db_url, tmp_path, lambda: query(db_url, "SELECT count(*) FROM bet_changes")[0][0] >= 3)
    fills = query(db_url, "SELECT o.fixture_id, o.price, b.price FROM order_changes o JOIN bet_changes b"
                          " ON b.order_id = o.order_id WHERE o.order_status = 'FILLED'")
    assert fills
    for fixture, cents, bet_price in fills:
        assert fixture in {f.fixture_id for f in simulator.market.fixtures}  # those the OddsPapi simulator shows
        assert abs(float(cents) - 1 / float(bet_price)) < 0.01  # filled at the bookmaker's implied probability
    (account, payload, old), = query(db_url, "SELECT account_id, payload, old FROM account_changes LIMIT 1")
    assert account == "polymarket-main" and old == {"balance": 10_000} and payload["balance"] < 10_000
    events = dict(query(db_url, "SELECT event, count(*) FROM order_changes GROUP BY 1"))
    assert events["INSERT"] >= 3 and events["UPDATE"] >= 6  # PENDING_PLACEMENT → PLACED → FILLED


def test_the_api_key_never_reaches_a_table_or_a_log(db_url: str, tmp_path: Path, caplog) -> None:
    import logging

    simulator = MmSimulator({KEY: CHANNELS}, rate=200)
    with caplog.at_level(logging.DEBUG):
        run(simulator, db_url, tmp_path, lambda: query(db_url, "SELECT count(*) FROM order_changes")[0][0] >= 3)
    assert_secret_nowhere(db_url, KEY, caplog.text)
    (subscribe,), = query(db_url, "SELECT detail->>'command' FROM collector_events WHERE event = 'command'"
                                  " AND detail->>'command' LIKE '%subscribe%' ORDER BY received_at LIMIT 1")
    assert '"apiKey":"***"' in subscribe


def test_a_bad_key_backs_off_and_is_recorded(db_url: str, tmp_path: Path) -> None:
    simulator = MmSimulator({KEY: CHANNELS})
    wrong = "11111111-2222-4333-8444-555555555555"
    collect_live(simulator, db_url, tmp_path, lambda url: toml(url, backoff_long_s=1.0), {"MM_KEY": wrong},
                 after(2.5))
    assert 2 <= len(simulator.errors) <= 4 and set(simulator.errors) == {"Invalid API key"}
    errors = [d for (d,) in query(db_url, "SELECT detail FROM collector_events WHERE event = 'error'")]
    assert errors and all(d == {"error": "Invalid API key"} for d in errors)
    assert wrong not in str(query(db_url, "SELECT detail::text FROM collector_events"))


def test_more_feeds_on_one_key_than_the_vendor_allows_is_a_config_error(tmp_path: Path) -> None:
    text = "".join(toml("ws://127.0.0.1:1/ws/subscribe", name=f"mm{i}") for i in range(6))
    with pytest.raises(ConfigError, match="6 mm-ws feeds use the same key, but the vendor allows 5"):
        feeds_from_toml(tmp_path, text, {"MM_KEY": KEY})


def test_the_sixth_socket_for_a_key_is_refused_by_the_simulator(tmp_path: Path) -> None:
    import websockets

    async def main() -> list[str]:
        simulator = MmSimulator({KEY: CHANNELS}, script=[b'{"type":"heartbeat"}'])
        url = await simulator.start()
        sockets = []
        for _ in range(6):
            ws = await websockets.connect(url)
            await ws.send(orjson.dumps({"type": "subscribe", "apiKey": KEY, "channels": ["orders"]}).decode())
            sockets.append((ws, orjson.loads(await ws.recv())))
        for ws, _ in sockets:
            await ws.close()
        await simulator.stop()
        return [reply.get("type") + ":" + reply.get("message", "") for _, reply in sockets]

    replies = asyncio.run(asyncio.wait_for(main(), 30))
    assert replies == ["subscribed:"] * 5 + ["error:Connection limit exceeded"]


def test_a_silent_server_trips_the_watchdog_and_the_feed_subscribes_again(db_url: str, tmp_path: Path) -> None:
    simulator = MmSimulator({KEY: CHANNELS}, rate=100, silent_after=5)
    run(simulator, db_url, tmp_path, lambda: len(simulator.received) >= 2 and len(simulator.received[1]) >= 1,
        silence_timeout_s=0.5, client_ping_s=0.1)
    assert simulator.received[1][0]["type"] == "subscribe"
    assert query(db_url, "SELECT count(*) FROM collector_events WHERE event = 'watchdog_timeout'")[0][0] >= 1


def test_plain_http_on_the_websocket_path_gets_426(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    async def main() -> int:
        simulator = MmSimulator({KEY: CHANNELS})
        url = (await simulator.start()).replace("ws://", "http://")
        try:
            await asyncio.to_thread(urllib.request.urlopen, url, timeout=5)
        except urllib.error.HTTPError as exc:
            return exc.code
        finally:
            await simulator.stop()
        return 200

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 426


# -- the vendor's two spellings, and its errors in every envelope (issue 23) ------------------------


def collect_for(simulator: MmSimulator, db_url: str, tmp_path: Path, seconds: float, env: dict[str, str],
                **tuning: object) -> None:
    """Collect for `seconds` whatever happens (a feed that stops by itself ends the collector sooner)."""

    async def main() -> None:
        url = await simulator.start()
        feeds = feeds_from_toml(tmp_path, toml(url, **tuning), env)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        try:
            await collect(db_url, feeds, WriterSettings(spool_dir=tmp_path / "spool"), stop=stop)
        finally:
            await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def error_rows(db_url: str) -> list[dict[str, object]]:
    return [d for (d,) in query(db_url, "SELECT detail FROM collector_events WHERE event = 'error'"
                                        " ORDER BY received_at")]


def test_the_simulator_speaks_both_spellings_of_the_vendors_pages(tmp_path: Path) -> None:
    import websockets

    async def exchange(simulator: MmSimulator, subscribe: dict[str, object]) -> object:
        url = await simulator.start()
        try:
            async with websockets.connect(url) as ws:
                await ws.send(orjson.dumps(subscribe).decode())
                reply = await ws.recv()
                try:
                    return orjson.loads(reply)
                except orjson.JSONDecodeError:
                    return ("text", reply)
        finally:
            await simulator.stop()

    async def main() -> list[object]:
        replies = []
        for spelling, strict, errors_as, subscribe in [
            ("apiKey", False, "object", {"type": "subscribe", "api_key": KEY, "channels": ["orders"]}),
            ("api_key", False, "object", {"type": "subscribe", "apiKey": KEY, "channels": ["orders"]}),
            ("api_key", True, "object", {"type": "subscribe", "apiKey": KEY, "channels": ["orders"]}),
            ("apiKey", True, "string", {"type": "subscribe", "api_key": KEY}),
            ("api_key", False, "text", {"type": "subscribe", "api_key": "not-a-uuid-at-all"}),
            ("apiKey", False, "text", {"type": "subscribe", "apiKey": "not-a-uuid-at-all"}),
        ]:
            simulator = MmSimulator({KEY: CHANNELS}, spelling=spelling, strict=strict, errors_as=errors_as,
                                    script=[b'{"type":"heartbeat"}'])
            replies.append(await exchange(simulator, subscribe))
        return replies

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [
        {"type": "subscribed", "subscriptionId": 1, "channels": ["orders"]},  # either key name is taken
        {"type": "subscribed", "subscription_id": 1, "channels": ["orders"]},  # the API reference's reply
        {"type": "error", "message": "api_key required"},  # strict: only its own spelling
        "apiKey required",  # an error as a JSON string
        ("text", "Invalid api_key format"),  # ... and as plain text
        ("text", "Invalid apiKey format")]


def test_the_subscribe_key_goes_under_the_name_the_config_gives(db_url: str, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # A vendor that reads only `api_key` (the API reference) answers `api_key required` to the default
    # `apiKey`: the same subscribe can only get the same answer, so the feed stops and says what to set.
    simulator = MmSimulator({KEY: CHANNELS}, spelling="api_key", strict=True, script=[b'{"type":"heartbeat"}'])
    with caplog.at_level(logging.ERROR):
        collect_for(simulator, db_url, tmp_path, 1.5, {"MM_KEY": KEY})
    assert simulator.errors == ["api_key required"], "a configuration error must not be retried"
    fix = 'the vendor found no key under "apiKey": set api_key_field = "api_key" (its pages spell the field both ways)'
    assert error_rows(db_url) == [{"error": "api_key required", "fix": fix}]
    assert any("feed mm stopped" in r.getMessage() and "api_key_field" in r.getMessage() for r in caplog.records)

    simulator = MmSimulator({KEY: CHANNELS}, spelling="api_key", strict=True, script=[b'{"type":"heartbeat"}'])
    run(simulator, db_url, tmp_path, lambda: bool(query(db_url, "SELECT 1 FROM raw_messages WHERE kind = 'heartbeat'")),
        api_key_field='"api_key"')
    assert simulator.received[0][0] == {"type": "subscribe", "api_key": KEY, "channels": list(CHANNELS)}
    (detail,), = query(db_url, "SELECT detail FROM collector_events WHERE event = 'subscribe'")
    assert detail["subscription_id"] == 1 and detail["granted"] == list(CHANNELS)


def test_an_api_key_field_the_vendor_does_not_know_is_a_config_error(tmp_path: Path) -> None:
    text = toml("ws://127.0.0.1:1/ws/subscribe", api_key_field='"key"')
    with pytest.raises(ConfigError, match='api_key_field must be "apiKey" or "api_key", got \'key\''):
        feeds_from_toml(tmp_path, text, {"MM_KEY": KEY})


def test_a_key_that_is_no_uuid_stops_the_feed_even_as_plain_text(db_url: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    simulator = MmSimulator({KEY: CHANNELS}, spelling="api_key", errors_as="text")
    with caplog.at_level(logging.ERROR):
        collect_for(simulator, db_url, tmp_path, 1.5, {"MM_KEY": "not-a-uuid-key"})
    assert simulator.errors == ["Invalid api_key format"], "a configuration error must not be retried"
    assert error_rows(db_url) == [{"error": "Invalid api_key format",
                                   "fix": "the key in MM_KEY is not a UUID: set it to the MM API key (a UUID)"}]
    # stored as the JSON string it would have been
    assert query(db_url, "SELECT kind, payload FROM raw_messages") == [("error", "Invalid api_key format")]
    assert query(db_url, "SELECT count(*) FROM quarantine") == [(0,)]
    assert any("feed mm stopped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("error", "errors_as"), [("Invalid API key", "text"), ("Connection limit exceeded", "text"),
                                                  ("Connection limit exceeded", "string")])
def test_an_unknown_key_or_too_many_sockets_pause_long_in_any_envelope(db_url: str, tmp_path: Path, error: str,
                                                                        errors_as: str) -> None:
    # An unknown key: the vendor may reactivate the client; too many sockets: stale ones time out.
    # Neither needs a change on our side, so the feed waits backoff_long_s and tries again.
    wrong = "11111111-2222-4333-8444-555555555555"
    refuse_all = error.startswith("Connection")
    simulator = MmSimulator({KEY: CHANNELS}, errors_as=errors_as, max_per_key=0 if refuse_all else 5)
    collect_for(simulator, db_url, tmp_path, 2.5, {"MM_KEY": KEY if refuse_all else wrong}, backoff_long_s=1.0)
    assert 2 <= len(simulator.errors) <= 4 and set(simulator.errors) == {error}
    assert error_rows(db_url) and all(d == {"error": error} for d in error_rows(db_url))
    assert query(db_url, "SELECT count(*) FROM quarantine") == [(0,)]
