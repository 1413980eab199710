"""CKEX interact ws through the live path: seed quotes, commands, renewal, reconnect, secrets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.collecting import assert_secret_nowhere, collect_live, fast, feeds_from_toml
from tests.conftest import query
from warehouse.config import ConfigError
from warehouse.simulate.ckex import CkexFaults, CkexSimulator

TOKEN = "eyJhbGciOiJIUzI1NiJ9.ckex-secret-jwt"
SUBSCRIPTIONS = ["order-slip-quote@chloe-market#40789105-e@219_33753655",
                 "order-slip-quote@fancy-market#44914246-e@878_55854706_f"]

# The two examples of the vendor's page (shared/seeds/ckex-interact-ws.txt), plus alive and error frames.
SEED = [
    '{"type": "order-slip", "data": [{"event_id": "41115853-e", "market_id": "1_31260330", "product_id": "1",'
    ' "price": "1.61", "status": "1"}, {"event_id": "41115853-e", "market_id": "1_31260330", "product_id": "2",'
    ' "price": "2.37", "status": "1"}, {"event_id": "41115853-e", "market_id": "1_31260330", "product_id": "3",'
    ' "price": "10.26", "status": "1"}]}',
    '{"type": "order-slip-fancy", "data": [{"mid": "878_55854706_f", "pid": "1", "bl": "181", "bo": "0",'
    ' "ll": "181", "lo": "0", "status": "-3", "ut": "2023-11-07T08:29:39.306Z"}]}',
    '{"type": "alive"}',
    '{"type": "error", "error": "market closed"}',
]


def toml(url: str, **tuning: object) -> str:
    subscriptions = ", ".join(f'"{s}"' for s in SUBSCRIPTIONS)
    return (f'[[feeds]]\nname = "ckex"\nkind = "ckex-ws"\nurl = "{url}"\ntoken_env = "CKEX_TOKEN"\n'
            f"subscriptions = [{subscriptions}]\n{fast(**tuning)}\n")


def collect_from(simulator: CkexSimulator, db_url: str, tmp_path: Path, until, **tuning: object) -> None:
    collect_live(simulator, db_url, tmp_path, lambda url: toml(url, **tuning), {"CKEX_TOKEN": TOKEN}, until)


def test_seed_quotes_give_exactly_the_rows_they_should(db_url: str, tmp_path: Path) -> None:
    simulator = CkexSimulator(TOKEN, script=SEED, rate=50)
    collect_from(simulator, db_url, tmp_path, lambda: query(db_url, "SELECT count(*) FROM raw_messages")[0][0] >= 4)
    assert simulator.commands[0][:3] == ["start", *SUBSCRIPTIONS]
    kinds = [k for (k,) in query(db_url, "SELECT kind FROM raw_messages ORDER BY seq")]
    assert kinds[:4] == ["order-slip", "order-slip-fancy", "alive", "error"]
    assert query(db_url, "SELECT bookmaker, fixture_id, market_id, outcome_id, price, active, status, line, side,"
                         " source_ts, attrs FROM price_ticks WHERE side IS NULL ORDER BY outcome_id") == [
        ("ckex", "41115853-e", "1_31260330", "1", 1.61, True, "1", None, None, None, {"price": "1.61"}),
        ("ckex", "41115853-e", "1_31260330", "2", 2.37, True, "1", None, None, None, {"price": "2.37"}),
        ("ckex", "41115853-e", "1_31260330", "3", 10.26, True, "1", None, None, None, {"price": "10.26"}),
    ]
    ut = datetime(2023, 11, 7, 8, 29, 39, 306000, tzinfo=UTC)
    # the fancy item has no eid: the event comes from the subscription of its market
    assert query(db_url, "SELECT fixture_id, market_id, outcome_id, side, line, price, active, status, source_ts,"
                         " attrs FROM price_ticks WHERE side IS NOT NULL ORDER BY side") == [
        ("44914246-e", "878_55854706_f", "1", "back", Decimal("181"), None, False, "-3", ut, {"odds": "0"}),
        ("44914246-e", "878_55854706_f", "1", "lay", Decimal("181"), None, False, "-3", ut, {"odds": "0"}),
    ]
    assert query(db_url, "SELECT detail FROM collector_events WHERE event = 'error'") == [
        ({"error": "market closed"},)]
    commands = [c for (c,) in query(db_url, "SELECT detail->>'command' FROM collector_events WHERE event = 'command'"
                                            " ORDER BY received_at")]
    assert commands[:3] == ['{"commend":"start"}', *(f'{{"commend":"{s}"}}' for s in SUBSCRIPTIONS)]


def test_subscriptions_are_renewed_and_resent_after_a_reconnect(db_url: str, tmp_path: Path) -> None:
    simulator = CkexSimulator(TOKEN, rate=100, faults=CkexFaults(drop_after=30))
    collect_from(simulator, db_url, tmp_path, lambda: len(simulator.commands) >= 2 and len(simulator.commands[0]) >= 5,
                 resubscribe_s=0.3)
    first, second = simulator.commands[0], simulator.commands[1]
    assert first[:3] == ["start", *SUBSCRIPTIONS]
    assert first[3:5] == SUBSCRIPTIONS or set(first[3:5]) == set(SUBSCRIPTIONS)  # renewals before the drop
    assert second[:3] == ["start", *SUBSCRIPTIONS]  # a new connection starts over
    assert query(db_url, "SELECT count(*) FROM collector_events WHERE event = 'connect'")[0][0] >= 2


def test_the_token_never_reaches_a_table_or_a_log(db_url: str, tmp_path: Path, caplog) -> None:
    simulator = CkexSimulator(TOKEN, rate=100)
    with caplog.at_level(logging.DEBUG):
        collect_from(simulator, db_url, tmp_path, lambda: query(db_url, "SELECT count(*) FROM price_ticks")[0][0] > 10)
    assert_secret_nowhere(db_url, TOKEN, caplog.text)
    (url,), = query(db_url, "SELECT detail->>'url' FROM collector_events WHERE event = 'connect' LIMIT 1")
    assert url.endswith("authorization=***")


def test_a_malformed_subscription_is_a_config_error(tmp_path: Path) -> None:
    text = toml("ws://127.0.0.1:1/dev-f/quote/do-not-look-back").replace(SUBSCRIPTIONS[0], "subscribe-everything")
    with pytest.raises(ConfigError, match="subscription 'subscribe-everything' is not"):
        feeds_from_toml(tmp_path, text, {"CKEX_TOKEN": TOKEN})


def test_sighup_applies_subscription_changes_without_a_restart(db_url: str, tmp_path: Path) -> None:
    import os
    import signal

    simulator = CkexSimulator(TOKEN, rate=50)
    added = "order-slip-quote@chloe-market#50000001-e@1_40000001"
    reloaded: list[bool] = []

    def until() -> bool:
        commands = simulator.commands[0] if simulator.commands else []
        if len(commands) >= 3 and not reloaded:
            config = tmp_path / "feeds.toml"
            config.write_text(config.read_text().replace(SUBSCRIPTIONS[0], added))
            reloaded.append(True)
            os.kill(os.getpid(), signal.SIGHUP)
        return sum(c == added for c in commands) >= 3  # subscribed, then renewed twice

    collect_live(simulator, db_url, tmp_path, lambda url: toml(url, resubscribe_s=0.3), {"CKEX_TOKEN": TOKEN},
                 until, reload=True)
    commands = simulator.commands[0]
    assert len(simulator.commands) == 1, "no reconnect was needed"
    unsubscribed = commands.index("unsubscribe-order-slip-quote#40789105-e@219_33753655")
    assert commands[unsubscribed + 1] == added
    assert SUBSCRIPTIONS[0] not in commands[unsubscribed:], "the removed market is no longer renewed"
    assert SUBSCRIPTIONS[1] in commands[unsubscribed + 2:], "the kept market still is"
    reloads = query(db_url, "SELECT detail->>'command' FROM collector_events WHERE detail->>'why' = 'reload'"
                            " ORDER BY received_at")
    assert reloads == [('{"commend":"unsubscribe-order-slip-quote#40789105-e@219_33753655"}',),
                       (f'{{"commend":"{added}"}}',)]


def test_malformed_quotes_are_quarantined_and_keepalives_are_not(db_url: str, tmp_path: Path) -> None:
    simulator = CkexSimulator(TOKEN, rate=100, alive_s=0.2, faults=CkexFaults(malformed_every=5, empty_frames=True))
    collect_from(simulator, db_url, tmp_path,
                 lambda: query(db_url, "SELECT count(*) FROM quarantine")[0][0] >= 2
                 and query(db_url, "SELECT count(*) FROM raw_messages WHERE kind = 'empty'")[0][0] >= 1)
    reasons = {r[:9] for (r,) in query(db_url, "SELECT reason FROM quarantine")}
    assert reasons == {"not JSON:"}
    kinds = {k for (k,) in query(db_url, "SELECT DISTINCT kind FROM raw_messages")}
    assert {"order-slip", "order-slip-fancy", "alive", "empty", "quarantined"} <= kinds
    assert query(db_url, "SELECT count(*) FROM price_ticks")[0][0] >= 8  # quotes after bad ones still land


def test_a_silent_server_is_left_and_the_new_connection_subscribes_again(db_url: str, tmp_path: Path) -> None:
    simulator = CkexSimulator(TOKEN, rate=100, alive_s=0.1, faults=CkexFaults(silent_after=10))
    collect_from(simulator, db_url, tmp_path, lambda: len(simulator.commands) >= 2 and len(simulator.commands[1]) >= 3,
                 silence_timeout_s=0.5)
    assert simulator.commands[1][:3] == ["start", *SUBSCRIPTIONS]
    assert query(db_url, "SELECT count(*) FROM collector_events WHERE event = 'watchdog_timeout'")[0][0] >= 1


def test_both_spellings_of_the_fancy_type_are_understood() -> None:
    from warehouse.feeds.ckex import Adapter

    adapter = Adapter("ckex", SUBSCRIPTIONS)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    item = {"eid": "9-e", "mid": "1_f", "pid": "2", "bl": "10", "bo": "1.9", "ll": "11", "lo": "2.1", "status": "1"}
    for spelling in ("order-slip-fancy", "order-slipt-fancy"):
        output = adapter.handle({"type": spelling, "data": [item]}, at)
        assert [(r.fixture_id, r.side, r.line, r.price, r.active) for r in output.records] == [
            ("9-e", "back", Decimal("10"), 1.9, True), ("9-e", "lay", Decimal("11"), 2.1, True)]
