"""OddsPapi v4: seed examples and faults through the live path (simulator → collector → PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.collecting import HalfOpen, after, assert_secret_nowhere, collect_live, fast, feeds_from_toml
from tests.conftest import query
from warehouse.simulate.oddspapi import OddsPapiFaults, OddsPapiSimulator

KEY = "5b9f0c3e-secret-oddspapi-key"

# The five examples of the vendor's page (shared/seeds/oddspapi-websocket.txt), verbatim.
SEED = [
    '{"fixtureId": "id2704726161008023", "statusId": 1, "updatedAt": "2025-06-11T16:55:28.415401+00:00"}',
    '{"fixtureId": "id1100097561092987", "bookmakerOdds": {"starcasino.be": {"markets": {"111": {"outcomes": {"111":'
    ' {"players": {"0": {"active": true, "betslip": null, "bookmakerOutcomeId": "2535416646", "changedAt":'
    ' "2025-06-11T16:55:30.284055+00:00", "limit": null, "playerName": null, "price": 1.345, "exchangeMeta": {},'
    ' "playerId": 0}}}}}}}}}',
    '{"fixtureId": "id1100023561139799", "bookmakerOdds": {"22bet": {"bookmakerFixtureId": "265591179",'
    ' "fixturePath": "https://22bets.com/line/basketball/5226-e/265591179-kk-partizan-buducnost-podgorica"}}}',
    '{"fixtureId": "id1001509158796975", "bookmakerOdds": {"stake": {"markets": {"101": {"outcomes": {"101":'
    ' {"players": {"0": {"active": true, "betslip": null, "bookmakerOutcomeId": "2535416646", "changedAt":'
    ' "2025-06-11T16:55:30.284055+00:00", "limit": null, "playerName": null, "price": 1.345, "exchangeMeta": {},'
    ' "playerId": 0}}}, "102": {"players": {"0": {"active": true, "betslip": null, "bookmakerOutcomeId":'
    ' "2535416646", "changedAt": "2025-06-11T16:55:30.284055+00:00", "limit": null, "playerName": null,'
    ' "price": 1.345, "exchangeMeta": {}, "playerId": 0}}}}}}}}}',
    '{"fixtureId": "id1000085362245214", "scores": {"periods": {"2": {"participant1Score": 0,'
    ' "participant2Score": 0, "updatedAt": "2025-07-23T16:56:37.122614+00:00"}}}}',
]
CHANGED_AT = datetime(2025, 6, 11, 16, 55, 30, 284055, tzinfo=UTC)
PLAYER_ATTRS = {"betslip": None, "bookmakerOutcomeId": "2535416646", "playerName": None, "exchangeMeta": {},
                "playerId": 0}


def toml(url: str, **tuning: object) -> str:
    # The stream alone: healing gaps over REST is tests/test_resync.py's.
    tuning = {"resync": "false", **tuning}
    return (f'[[feeds]]\nname = "oddspapi"\nkind = "oddspapi-ws"\nurl = "{url}"\napi_key_env = "OP_KEY"\n'
            f"{fast(**tuning)}\n")


def collect_from(simulator: OddsPapiSimulator, db_url: str, tmp_path: Path, until, **tuning: object) -> None:
    collect_live(simulator, db_url, tmp_path, lambda url: toml(url, **tuning), {"OP_KEY": KEY}, until)


def frames_stored(db_url: str) -> int:
    return query(db_url, "SELECT count(*) FROM raw_messages")[0][0]


def test_seed_examples_give_exactly_the_rows_they_should(db_url: str, tmp_path: Path) -> None:
    simulator = OddsPapiSimulator(KEY, script=SEED, generate=False)
    collect_from(simulator, db_url, tmp_path, lambda: frames_stored(db_url) == 5)

    raws = query(db_url, "SELECT id, seq, kind, payload::text FROM raw_messages ORDER BY seq")
    assert [(seq, kind) for _, seq, kind, _ in raws] == [
        (1, "fixture"), (2, "price"), (3, "bookmaker"), (4, "price"), (5, "score")]
    assert [payload for *_, payload in raws] == SEED  # each frame's text, byte for byte
    ids = [r[0] for r in raws]

    assert query(db_url, "SELECT raw_id, fixture_id, bookmaker, action, start_time, status, source_ts, changes"
                         " FROM fixture_changes ORDER BY raw_id") == [
        (ids[0], "id2704726161008023", None, "change", None, "1",
         datetime(2025, 6, 11, 16, 55, 28, 415401, tzinfo=UTC),
         {"statusId": 1, "updatedAt": "2025-06-11T16:55:28.415401+00:00"}),
        (ids[2], "id1100023561139799", "22bet", "change", None, None, None,
         {"bookmakerFixtureId": "265591179",
          "fixturePath": "https://22bets.com/line/basketball/5226-e/265591179-kk-partizan-buducnost-podgorica"}),
    ]
    ticks = query(db_url, "SELECT raw_id, source, bookmaker, fixture_id, market_id, outcome_id, player_id, line,"
                          " side, price, active, status, max_stake, source_ts, attrs FROM price_ticks"
                          " ORDER BY raw_id, outcome_id")
    assert ticks == [
        (ids[1], "oddspapi", "starcasino.be", "id1100097561092987", "111", "111", "0", None, None, 1.345, True,
         None, None, CHANGED_AT, PLAYER_ATTRS),
        (ids[3], "oddspapi", "stake", "id1001509158796975", "101", "101", "0", None, None, 1.345, True,
         None, None, CHANGED_AT, PLAYER_ATTRS),
        (ids[3], "oddspapi", "stake", "id1001509158796975", "101", "102", "0", None, None, 1.345, True,
         None, None, CHANGED_AT, PLAYER_ATTRS),
    ]
    assert query(db_url, "SELECT raw_id, fixture_id, period, home_score, away_score, minute, live, source_ts, attrs"
                         " FROM score_changes") == [
        (ids[4], "id1000085362245214", "2", 0, 0, None, None,
         datetime(2025, 7, 23, 16, 56, 37, 122614, tzinfo=UTC), None)]
    assert query(db_url, "SELECT count(*) FROM market_changes") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM quarantine") == [(0,)]


def test_integer_prices_limits_and_explicit_nulls(db_url: str, tmp_path: Path) -> None:
    frames = [
        '{"fixtureId": "f1", "bookmakerOdds": {"b": {"markets": {"1": {"outcomes": {"1": {"players": {"0":'
        ' {"price": 2, "active": false, "limit": 250.5, "changedAt": "2025-06-11T16:55:30+00:00"}}}}}}}}}',
        '{"fixtureId": "f1", "seasonId": null, "startTime": 1750000000}',
    ]
    collect_from(OddsPapiSimulator(KEY, script=frames, generate=False), db_url, tmp_path,
                 lambda: frames_stored(db_url) == 2)
    assert query(db_url, "SELECT price, active, max_stake, attrs FROM price_ticks") == [
        (2.0, False, Decimal("250.5"), None)]
    assert query(db_url, "SELECT start_time, changes FROM fixture_changes") == [
        (datetime.fromtimestamp(1750000000, UTC), {"seasonId": None, "startTime": 1750000000})]


def test_malformed_frames_are_quarantined_and_the_stream_goes_on(db_url: str, tmp_path: Path) -> None:
    frames = [SEED[1], "{not json", '{"bookmakerOdds": {}}', '{"fixtureId": "f", "bookmakerOdds": {"b":'
              ' {"markets": {"1": {"outcomes": {"1": {"players": {"0": {"price": "abc"}}}}}}}}}', SEED[4]]
    collect_from(OddsPapiSimulator(KEY, script=frames, generate=False), db_url, tmp_path,
                 lambda: frames_stored(db_url) == 5)
    rows = query(db_url, "SELECT r.seq, r.payload IS NULL, q.reason, q.frame FROM quarantine q"
                         " JOIN raw_messages r ON r.id = q.raw_id ORDER BY r.seq")
    assert [(seq, null) for seq, null, _, _ in rows] == [(2, True), (3, False), (4, False)]
    assert rows[0][2].startswith("not JSON") and rows[0][3] == "{not json"
    assert "fixtureId missing" in rows[1][2]
    assert "number expected" in rows[2][2]
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(1,)]
    assert query(db_url, "SELECT count(*) FROM score_changes") == [(1,)]


def test_hostile_frames_are_quarantined_with_the_reason_and_the_stream_goes_on(db_url: str, tmp_path: Path) -> None:
    deep = b"[" * 2000 + b"]" * 2000  # deeper than the JSON parser accepts
    huge = b'{"fixtureId": "f", "pad": "' + b"x" * 300_000 + b'"}'
    frames = [b'{"fixtureId": "\xff\xfe"}', deep, huge, SEED[4].encode()]
    collect_from(OddsPapiSimulator(KEY, script=frames, generate=False), db_url, tmp_path,
                 lambda: frames_stored(db_url) == 4, max_frame_bytes=100_000)
    rows = query(db_url, "SELECT r.seq, q.reason, length(q.frame) FROM quarantine q JOIN raw_messages r"
                         " ON r.id = q.raw_id ORDER BY r.seq")
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1].startswith("not JSON") and "utf-8" in rows[0][1].lower()
    assert rows[1][1].startswith("not JSON") and "depth limit" in rows[1][1]
    assert rows[2][1] == f"frame of {len(huge)} bytes exceeds max_frame_bytes (100000)" and rows[2][2] == 1024
    assert query(db_url, "SELECT count(*) FROM score_changes") == [(1,)]  # the stream went on


def test_vendor_clocks_are_kept_as_sent_and_ours_never_runs_backwards(db_url: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from warehouse.collect import runner

    class SteppedBack(datetime):
        """The wall clock jumps an hour back (an NTP step) after the second frame."""
        calls = 0

        @classmethod
        def now(cls, tz=None):
            cls.calls += 1
            return datetime.now(tz) - (timedelta(hours=1) if cls.calls > 2 else timedelta(0))

    monkeypatch.setattr(runner, "datetime", SteppedBack)
    stamps = ["2999-01-01T00:00:00+00:00", "1971-01-01T00:00:00Z", "2025-06-11T16:55:30.284055+00:00"]
    frames = [SEED[1].replace("2025-06-11T16:55:30.284055+00:00", stamp) for stamp in stamps]
    collect_from(OddsPapiSimulator(KEY, script=frames, generate=False), db_url, tmp_path,
                 lambda: frames_stored(db_url) == 3)
    rows = query(db_url, "SELECT p.source_ts, r.received_at FROM price_ticks p JOIN raw_messages r ON r.id = p.raw_id"
                         " ORDER BY r.seq")
    assert [r[0] for r in rows] == [datetime(2999, 1, 1, tzinfo=UTC), datetime(1971, 1, 1, tzinfo=UTC), CHANGED_AT]
    received = [r[1] for r in rows]
    assert received == sorted(received), "received_at went backwards"


def test_a_half_open_connection_is_detected_by_ping_and_replaced(db_url: str, tmp_path: Path) -> None:
    relay = HalfOpen(OddsPapiSimulator(KEY, rate=50))

    def cut_once_then_wait_for_a_new_connection() -> bool:
        if frames_stored(db_url) >= 20 and not relay._cut:
            relay.cut()
        return len(query(db_url, "SELECT 1 FROM collector_events WHERE event = 'connect'")) >= 2

    collect_from(relay, db_url, tmp_path, cut_once_then_wait_for_a_new_connection, ping_interval_s=0.5,
                 silence_timeout_s=60)
    reasons = [r[0] for r in query(db_url, "SELECT detail->>'reason' FROM collector_events WHERE event = 'disconnect'"
                                           " ORDER BY received_at")]
    assert "ping" in reasons[0], reasons  # found by the WebSocket keepalive, long before the silence watchdog


def test_a_dropped_connection_is_a_visible_gap_and_collection_resumes(db_url: str, tmp_path: Path) -> None:
    simulator = OddsPapiSimulator(KEY, rate=500, faults=OddsPapiFaults(drop_after=40))
    collect_from(simulator, db_url, tmp_path, lambda: simulator.connections >= 3 and frames_stored(db_url) >= 100)
    events = [e for (e,) in query(db_url, "SELECT event FROM collector_events WHERE event <> 'handover'"
                                          " ORDER BY received_at")]  # (the claim taken first: one of its own)
    assert events[:4] == ["connect", "disconnect", "reconnect_attempt", "connect"]
    reasons = [r for (r,) in query(db_url, "SELECT detail->>'reason' FROM collector_events WHERE event = 'disconnect'"
                                           " ORDER BY received_at")]
    assert reasons.count("connection lost without a close frame") >= 2
    # stopped while connected: a "shutdown" disconnect; stopped during the backoff pause: none needed
    assert set(reasons) <= {"connection lost without a close frame", "shutdown"}
    # every connection's frames are numbered 1..n without a hole: nothing received was lost
    per_connection = query(db_url, "SELECT count(*), min(seq), max(seq) FROM raw_messages GROUP BY connection_id")
    assert all(n == high and low == 1 for n, low, high in per_connection)
    assert len(per_connection) >= 3


def test_a_rejected_key_backs_off_instead_of_hammering(db_url: str, tmp_path: Path) -> None:
    simulator = OddsPapiSimulator(KEY, faults=OddsPapiFaults(reject_all_keys=True))
    collect_live(simulator, db_url, tmp_path, lambda url: toml(url, backoff_long_s=1.0), {"OP_KEY": KEY}, after(3))
    # 3 s with a long backoff of 0.8–1 s after each 401: a handful of attempts, not hundreds
    assert 2 <= simulator.refused <= 5
    errors = query(db_url, "SELECT detail->>'status', detail->>'body' FROM collector_events WHERE event = 'error'")
    assert errors and all(status == "401" for status, _ in errors)
    assert "invalid apiKey" in errors[0][1]


def test_a_silent_server_trips_the_watchdog_and_the_collector_reconnects(db_url: str, tmp_path: Path) -> None:
    simulator = OddsPapiSimulator(KEY, rate=200, faults=OddsPapiFaults(silent_after=10))
    collect_from(simulator, db_url, tmp_path, lambda: simulator.connections >= 2, silence_timeout_s=0.5)
    (silent,), = query(db_url, "SELECT (detail->>'silent_s')::float FROM collector_events"
                               " WHERE event = 'watchdog_timeout' ORDER BY received_at LIMIT 1")
    assert 0.5 <= silent < 3
    reasons = [r for (r,) in query(db_url, "SELECT detail->>'reason' FROM collector_events WHERE event = 'disconnect'"
                                           " ORDER BY received_at")]
    assert reasons[0].startswith("watchdog: nothing received for")


def test_the_api_key_never_reaches_a_table_or_a_log(db_url: str, tmp_path: Path, caplog) -> None:
    simulator = OddsPapiSimulator(KEY, rate=300, faults=OddsPapiFaults(drop_after=20))
    with caplog.at_level(logging.DEBUG):
        collect_from(simulator, db_url, tmp_path, lambda: simulator.connections >= 2)
    assert_secret_nowhere(db_url, KEY, caplog.text)
    urls = query(db_url, "SELECT detail->>'url' FROM collector_events WHERE event = 'connect'")
    assert urls and all(u.endswith("apiKey=***") for (u,) in urls)


@pytest.mark.parametrize(("text", "message"), [
    ('[[feeds]]\nname = "o"\nkind = "oddspapi-ws"\nurl = "ws://x"\napi_key_env = "OP_KEY"\nurll = 1\n',
     "unknown key 'urll'"),
    ('[[feeds]]\nname = "o"\nkind = "oddspapi-ws"\napi_key_env = "OP_KEY"\n', "missing required key 'url'"),
    ('[[feeds]]\nname = "o"\nkind = "oddspapi-ws"\nurl = "ws://x"\napi_key_env = "UNSET_KEY"\n',
     "environment variable UNSET_KEY (named by 'api_key_env') is not set"),
])
def test_feed_config_mistakes_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    from warehouse.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        feeds_from_toml(tmp_path, text, {"OP_KEY": KEY})
    assert message in str(caught.value) and str(tmp_path / "feeds.toml") in str(caught.value)
