"""Healing gaps over REST (issue 16), through the live path: simulators (stream and REST twin) →
collector → PostgreSQL. The socket is dropped, the market moves and orders fill while nobody
listens, the collector reconnects; afterwards the warehouse holds what the vendor holds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.collecting import assert_secret_nowhere, fast, feeds_from_toml
from tests.conftest import query
from warehouse import replay
from warehouse.collect.service import collect
from warehouse.config import WriterSettings
from warehouse.feeds.contract import RestCall
from warehouse.simulate.market import Market
from warehouse.simulate.mm import CHANNELS, MmSimulator
from warehouse.simulate.oddspapi import OddsPapiSimulator
from warehouse.simulate.rest import RestFaults

KEY = "5b9f0c3e-secret-oddspapi-key"
MM_KEY = "0d7e3c1a-5b6f-4c2d-9e8f-fedcba987654"
STREAM = "kind !~ '^(snapshot|backfill):'"  # raw_messages of the stream (not REST answers)
RUN = 20261130  # the simulators' market is made with it, so its fixture ids are known before it starts
FIXTURES = [fixture.fixture_id for fixture in Market(run=RUN).fixtures]  # the simulator's (the same seed and run)


def oddspapi_toml(url: str, **keys: object) -> str:
    # The market's fixtures are configured: the resync at the start always has calls to make, so a
    # test can wait for it to end before it makes its gap.
    keys = {"fixtures": FIXTURES, **keys}
    return (f'[[feeds]]\nname = "oddspapi"\nkind = "oddspapi-ws"\nurl = "{url}"\napi_key_env = "OP_KEY"\n'
            f"{fast(**keys)}\n")


def mm_toml(url: str, **keys: object) -> str:
    return f'[[feeds]]\nname = "mm"\nkind = "mm-ws"\nurl = "{url}"\napi_key_env = "MM_KEY"\n{fast(**keys)}\n'


async def until(condition: Callable[[], bool], what: str, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def count(db_url: str, sql: str, *params: object) -> int:
    return int(query(db_url, sql, *params)[0][0])


def resyncs(db_url: str, reason: str | None = None) -> list[dict[str, Any]]:
    """The detail of each resync_finished row (of passes with `reason`), in order."""
    rows = [d for (d,) in query(db_url, "SELECT detail FROM collector_events WHERE event = 'resync_finished'"
                                        " ORDER BY received_at")]
    return [d for d in rows if reason is None or d.get("reason") == reason]


class Collector:
    """`collect` in this process on `toml`, until `stop()`."""

    def __init__(self, db_url: str, tmp_path: Path, toml: str, env: dict[str, str]) -> None:
        self.stop_event = asyncio.Event()
        feeds = feeds_from_toml(tmp_path, toml, env)
        self.task = asyncio.create_task(collect(db_url, feeds, WriterSettings(spool_dir=tmp_path / "spool"),
                                                stop=self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 30)


def settled(db_url: str) -> bool:
    """The start's resync has run, no pass is running, and none waits to make calls again."""
    started = count(db_url, "SELECT count(*) FROM collector_events WHERE event = 'resync_started'")
    done = resyncs(db_url)
    return started == len(done) >= 1 and done[-1]["retry"] == 0


def errors(db_url: str) -> int:
    return count(db_url, "SELECT count(*) FROM collector_events WHERE event = 'error'")


def selections(simulator: OddsPapiSimulator) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """(fixture, bookmaker, market, outcome, player) → (price, changedAt) in the vendor's state."""
    return {(f, b, m, o, p): (player["price"], player["changedAt"])
            for f, fixture in simulator.state.items() for b, book in (fixture.get("bookmakerOdds") or {}).items()
            for m, market in (book.get("markets") or {}).items() for o, outcome in market["outcomes"].items()
            for p, player in outcome["players"].items()}


def as_of_now(db_url: str) -> dict[tuple[str, ...], float]:
    return {row[:5]: row[5] for row in query(
        db_url, "SELECT fixture_id, bookmaker, market_id, outcome_id, player_id, price FROM prices_as_of(now())")}


async def oddspapi_gap(simulator: OddsPapiSimulator, db_url: str, during: Callable[[], None]) -> None:
    """Collect until every fixture is priced, then a gap: the socket drops and reconnects are refused
    while `during()` runs; then the collector may come back."""
    await until(lambda: count(db_url, "SELECT count(DISTINCT fixture_id) FROM price_ticks") == 4
                and settled(db_url), "every fixture, and no resync running")
    refused = errors(db_url)
    simulator.faults.reject_all_keys = True
    assert simulator.drop_connections() == 1
    await until(lambda: errors(db_url) > refused, "a refused reconnect")
    during()
    simulator.faults.reject_all_keys = False


def test_a_gap_is_healed_from_rest(db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))
    before: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def market_moves_while_nobody_listens() -> None:
        before.update(selections(simulator))
        simulator.generate = False  # and the stream stays quiet after: what changed, only REST can tell
        simulator.advance(300)

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url), {"OP_KEY": KEY})
        await oddspapi_gap(simulator, db_url, market_moves_while_nobody_listens)
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync after the gap")
        await collector.stop()
        await simulator.stop()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(asyncio.wait_for(main(), 120))

    after = selections(simulator)
    moved = {s for s, value in after.items() if before.get(s) != value}
    assert moved and simulator.unsent > 0
    # The warehouse's view of every selection is the vendor's, and what moved in the gap says so.
    assert as_of_now(db_url) == {s: price for s, (price, _) in after.items()}
    healed = {row[:5] for row in query(db_url, "SELECT fixture_id, bookmaker, market_id, outcome_id, player_id"
                                               " FROM prices_as_of(now()) WHERE origin = 'snapshot'")}
    assert healed == moved  # the others' snapshot rows repeat what the stream gave: left out of the relations
    # The resync: every fixture seen, both endpoints, each answer one frame; the gap began with the last frame.
    (started,), = query(db_url, "SELECT detail FROM collector_events WHERE event = 'resync_started'"
                                " AND detail->>'reason' = 'reconnect'")
    assert started["endpoints"] == {"/v4/odds": 4, "/v4/scores": 4} and started["covers_total"] == 4
    last_frame = query(db_url, f"SELECT max(received_at) FROM raw_messages WHERE {STREAM} AND received_at <"
                               " (SELECT min(received_at) FROM collector_events WHERE event = 'error')")[0][0]
    assert datetime.fromisoformat(started["gap_started"]) == last_frame
    (finished,) = resyncs(db_url, "reconnect")
    assert (finished["calls"], finished["ok"], finished["failed"], finished["retry"], finished["covered"]) == \
        (8, 8, 0, 0, 4)
    answers = query(db_url, "SELECT r.kind, r.event_id, count(p.*) FROM raw_messages r LEFT JOIN price_ticks p"
                            " ON p.raw_id = r.id WHERE r.connection_id = (SELECT connection_id FROM collector_events"
                            " WHERE event = 'resync_started' AND detail->>'reason' = 'reconnect')"
                            " GROUP BY r.kind, r.event_id")
    assert sorted(kind for kind, _, _ in answers) == ["snapshot:/v4/odds"] * 4 + ["snapshot:/v4/scores"] * 4
    for kind, event_id, _ in answers:
        call = RestCall.stored(kind, event_id)  # what replay reads back
        assert call.params["apiKey"] == "***" and call.params["fixtureId"] in FIXTURES
    assert sum(ticks for _, _, ticks in answers) == len(after)  # every selection the vendor quotes
    periods = sum(len(fixture.get("scores") or {}) for fixture in simulator.state.values())
    assert count(db_url, "SELECT count(*) FROM score_changes s JOIN raw_messages r ON r.id = s.raw_id"
                         " WHERE r.kind = 'snapshot:/v4/scores' AND r.connection_id = (SELECT connection_id FROM"
                         " collector_events WHERE event = 'resync_started' AND detail->>'reason' = 'reconnect')"
                         ) == periods
    assert_secret_nowhere(db_url, KEY, caplog.text)


def test_every_frame_pushed_while_the_resync_runs_is_stored(db_url: str, tmp_path: Path) -> None:
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url), {"OP_KEY": KEY})
        await oddspapi_gap(simulator, db_url, lambda: simulator.advance(300))
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync after the gap")
        simulator.generate = False  # the stream ends; what it sent must all be stored
        await until(lambda: pushed_stored(db_url) == list(simulator.sent_by.values())[-1], "every pushed frame")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    (started, finished), = query(
        db_url, "SELECT min(received_at) FILTER (WHERE event = 'resync_started'), max(received_at) FILTER"
                " (WHERE event = 'resync_finished') FROM collector_events WHERE detail->>'reason' = 'reconnect'")
    during = count(db_url, f"SELECT count(*) FROM raw_messages WHERE {STREAM} AND received_at BETWEEN %s AND %s",
                   started, finished)
    assert during > 100, "the stream went on while the resync ran"
    assert pushed_stored(db_url) == list(simulator.sent_by.values())[-1]
    assert as_of_now(db_url) == simulator.quoted()


def pushed_stored(db_url: str) -> int:
    """Frames stored from the newest connection of the stream."""
    return count(db_url, f"SELECT count(*) FROM raw_messages WHERE {STREAM} AND connection_id ="
                         " (SELECT connection_id FROM collector_events WHERE event = 'connect'"
                         " ORDER BY received_at DESC LIMIT 1)")


def test_the_snapshot_stream_race_gives_the_pushed_tick(db_url: str, tmp_path: Path) -> None:
    # The vendor takes the /v4/odds answer's state, then pushes a newer price of that fixture, then
    # sends the answer: the answer arrives after the push, with older prices.
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url), {"OP_KEY": KEY})

        def quiet_market() -> None:
            simulator.generate = False  # only the race's push is on the new connection
            simulator.faults.race_odds = 1

        await oddspapi_gap(simulator, db_url, quiet_market)
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync after the gap")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    (race,) = simulator.races
    for outcome, pushed in race["pushed"].items():
        rows = query(db_url, "SELECT price, origin, source_ts, received_at FROM price_ticks WHERE fixture_id = %s"
                             " AND bookmaker = %s AND outcome_id = %s AND received_at > (SELECT max(received_at)"
                             " FROM collector_events WHERE event = 'error') ORDER BY source_ts",
                     race["fixture"], race["bookmaker"], outcome)
        (answered, snap_origin, snap_ts, _), (price, push_origin, push_ts, _) = rows
        assert (answered, snap_origin) == (race["answered"][outcome], "snapshot")
        assert (price, push_origin) == (pushed, None) and push_ts > snap_ts and answered != pushed
        current = query(db_url, "SELECT price, origin FROM prices_as_of(now()) WHERE fixture_id = %s"
                                " AND bookmaker = %s AND outcome_id = %s", race["fixture"], race["bookmaker"], outcome)
        assert current == [(pushed, None)]
    stored = {row[:5]: row[5] for row in query(
        db_url, "SELECT fixture_id, bookmaker, market_id, outcome_id, player_id, price FROM prices_as_of(now())")}
    assert stored == simulator.quoted()


def test_a_stale_rest_answer_never_rolls_back_what_the_stream_gave(db_url: str, tmp_path: Path) -> None:
    # The vendor answers /v4/odds from a cache one change old: the rows are stored, the relations
    # see by the vendor's time (changedAt) that the stream was ahead.
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url), {"OP_KEY": KEY})

        def quiet_and_stale() -> None:
            simulator.generate = False
            simulator.faults.stale_odds = True

        await oddspapi_gap(simulator, db_url, quiet_and_stale)
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync after the gap")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    # Stored: answers older than the pushed prices the collector had before it asked.
    older = count(db_url, "SELECT count(*) FROM price_ticks AS s WHERE s.origin = 'snapshot' AND EXISTS (SELECT 1"
                          " FROM price_ticks AS e WHERE e.origin IS NULL AND e.fixture_id = s.fixture_id AND"
                          " e.bookmaker = s.bookmaker AND e.outcome_id = s.outcome_id AND e.source_ts > s.source_ts"
                          " AND e.received_at < s.received_at)")
    assert older >= 1, "the stale answer was stored"
    # Yet every selection's price is that of its row with the newest vendor time (the stream's, where
    # it was ahead; the answer's where the socket's drop lost the stream's last frames).
    newest = {row[:5]: row[5] for row in query(
        db_url, "SELECT DISTINCT ON (fixture_id, bookmaker, market_id, outcome_id, player_id) fixture_id, bookmaker,"
                " market_id, outcome_id, player_id, price FROM price_ticks ORDER BY fixture_id, bookmaker, market_id,"
                " outcome_id, player_id, source_ts DESC, received_at DESC")}
    assert as_of_now(db_url) == newest


def test_cooldowns_and_429_are_honoured(db_url: str, tmp_path: Path) -> None:
    # The vendor's cooldown on /v4/odds is longer than the feed knows: it answers 429 with retryMs and
    # Retry-After, and the collector waits that long before the next call of the endpoint.
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN), cooldowns={"/v4/odds": 1.2, "/v4/scores": 1.0})

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url), {"OP_KEY": KEY})
        await oddspapi_gap(simulator, db_url, lambda: None)
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync after the gap")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    odds = simulator.rest.statuses("/v4/odds")
    assert 429 in odds and odds.count(200) >= 4
    assert simulator.rest.too_soon == 0, "no call came before the 429 said it may"
    (finished,) = resyncs(db_url, "reconnect")
    assert finished["refused"] >= 1 and (finished["failed"], finished["retry"], finished["covered"]) == (0, 0, 4)
    assert sum(d["refused"] for d in resyncs(db_url)) == sum(status == 429 for _, _, status in simulator.rest.calls)


def test_failed_calls_are_made_again_after_a_backoff_and_a_refused_key_pauses(db_url: str, tmp_path: Path) -> None:
    faults = RestFaults()
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN), rest_faults=faults)

    def fail_three() -> None:
        faults.fail_next, faults.fail_status = 3, 502

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url), {"OP_KEY": KEY})
        await oddspapi_gap(simulator, db_url, fail_three)
        await until(lambda: len(resyncs(db_url, "retry")) == 1, "the failed calls made again")
        await oddspapi_gap(simulator, db_url, lambda: setattr(faults, "reject_key", True))
        await until(lambda: len(resyncs(db_url, "reconnect")) == 2, "the pass whose key is refused")
        faults.reject_key = False
        await until(lambda: len(resyncs(db_url, "retry")) >= 2 and resyncs(db_url)[-1]["retry"] == 0,
                    "the calls made again once the key is good")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    failing, refused = resyncs(db_url, "reconnect")
    assert (failing["failed"], failing["retry"], failing["ok"]) == (3, 3, 5) and failing["retry_in_s"] > 0
    assert all("HTTP 502" in e and "apiKey=***" in e for e in failing["errors"])
    healed = resyncs(db_url, "retry")[0]
    assert (healed["calls"], healed["ok"], healed["retry"]) == (3, 3, 0)
    assert refused["refused"] >= 1 and refused["retry"] >= 1 and any("HTTP 401" in e for e in refused["errors"])
    assert resyncs(db_url)[-1]["retry"] == 0
    assert as_of_now(db_url).keys() == simulator.quoted().keys()


def test_a_slow_answer_times_out_and_is_fetched_again(db_url: str, tmp_path: Path) -> None:
    faults = RestFaults()
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN), rest_faults=faults)

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, oddspapi_toml(url, rest_timeout_s=0.5), {"OP_KEY": KEY})
        await oddspapi_gap(simulator, db_url, lambda: setattr(faults, "slow_s", 2.0))
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "a resync whose answers time out")
        faults.slow_s = 0.0
        await until(lambda: resyncs(db_url)[-1]["retry"] == 0 and resyncs(db_url)[-1]["reason"] == "retry",
                    "the calls made again")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    (slow,) = resyncs(db_url, "reconnect")
    assert slow["failed"] == slow["retry"] == 8 and all("ReadTimeout" in e for e in slow["errors"])
    # made again until answered: on a loaded machine a first retry may still meet the slow vendor
    assert sum(again["ok"] for again in resyncs(db_url, "retry")) == 8


def test_backfill_fetches_the_prices_of_the_gap_as_backfill_rows(db_url: str, tmp_path: Path) -> None:
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))
    books = ("pinnacle", "bet365", "stake")

    async def main() -> None:
        url = await simulator.start()
        toml = oddspapi_toml(url) + f"backfill = true\nbookmakers = {list(books)!r}\n".replace("'", '"')
        collector = Collector(db_url, tmp_path, toml, {"OP_KEY": KEY})
        await oddspapi_gap(simulator, db_url, lambda: simulator.advance(300))
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync with its backfill", timeout=60)
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    (started,) = [d for (d,) in query(db_url, "SELECT detail FROM collector_events WHERE event = 'resync_started'"
                                              " AND detail->>'reason' = 'reconnect'")]
    assert started["endpoints"]["/v4/historical-odds"] == 4  # a call per fixture: 3 bookmakers fit in one
    calls = query(db_url, "SELECT kind, event_id, received_at FROM raw_messages WHERE kind LIKE 'backfill:%%'")
    assert len(calls) == 4
    window = RestCall.stored(calls[0][0], calls[0][1]).scope  # the gap: stored with the answer, never sent
    since, until_ = datetime.fromisoformat(window["from"]), datetime.fromisoformat(window["to"])
    assert since == datetime.fromisoformat(started["gap_started"])
    rows = query(db_url, "SELECT p.source_ts, p.received_at, p.bookmaker, r.kind, r.received_at FROM price_ticks p"
                         " JOIN raw_messages r ON r.id = p.raw_id WHERE p.origin = 'backfill'")
    assert rows, "prices changed during the gap"
    for source_ts, received_at, bookmaker, kind, fetched in rows:
        # the vendor's time inside the gap; ours, when the call was made (after the gap)
        assert since < source_ts <= until_ <= received_at == fetched and bookmaker in books
        assert kind == "backfill:/v4/historical-odds"
    in_gap = {(f, b, m, o, p, e["createdAt"]) for (f, b, m, o, p), entries in simulator.history.items()
              for e in entries if b in books and since < datetime.fromisoformat(e["createdAt"]) <= until_}
    assert len(rows) == len(in_gap)
    # not in the relations: they order by our clock, and these came long after their time
    assert count(db_url, "SELECT count(*) FROM price_history WHERE raw_id IN (SELECT raw_id FROM price_ticks"
                         " WHERE origin = 'backfill')") == 0
    assert_replay_derives_the_same(db_url, "oddspapi")


def test_an_order_filled_during_the_gap_is_fetched_with_its_bet_and_account(db_url: str, tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    simulator = MmSimulator({MM_KEY: CHANNELS}, rate=50)
    filled: list[int] = []

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, mm_toml(url), {"MM_KEY": MM_KEY})
        await until(lambda: count(db_url, "SELECT count(*) FROM order_changes WHERE origin IS NULL") >= 3, "orders")
        allowed = simulator.keys.pop(MM_KEY)  # reconnects are refused: "Invalid API key"
        assert simulator.drop_connections() == 1
        await until(lambda: errors(db_url) >= 1, "a refused reconnect")
        filled.append(simulator.trade())
        simulator.keys[MM_KEY] = allowed
        await until(lambda: len(resyncs(db_url, "reconnect")) == 1, "the resync after the gap")
        await collector.stop()
        await simulator.stop()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(asyncio.wait_for(main(), 120))
    order = str(filled[0])
    assert count(db_url, "SELECT count(*) FROM order_changes WHERE order_id = %s AND origin IS NULL", order) == 0
    (event, status, stake, matched, payload), = query(
        db_url, "SELECT event, order_status, stake, matched_stake, payload FROM order_changes"
                " WHERE order_id = %s AND origin = 'snapshot'", order)
    assert (event, status, matched) == ("SNAPSHOT", "FILLED", stake) and payload["updatedAt"]
    assert count(db_url, "SELECT count(*) FROM bet_changes WHERE order_id = %s AND origin = 'snapshot'", order) == 1
    assert count(db_url, "SELECT count(*) FROM account_changes WHERE origin = 'snapshot'") >= 1
    (started,), = query(db_url, "SELECT detail FROM collector_events WHERE event = 'resync_started'"
                                " AND detail->>'reason' = 'reconnect'")
    orders_call = query(db_url, "SELECT event_id FROM raw_messages WHERE kind = 'snapshot:/api/v1/orders'"
                                " ORDER BY received_at DESC LIMIT 1")[0][0]
    params = RestCall.stored("snapshot:/api/v1/orders", orders_call).params
    since = datetime.fromisoformat(params["fromDate"])  # milliseconds, as the vendor takes it
    assert abs(since - (datetime.fromisoformat(started["gap_started"]) - timedelta(seconds=60))) < timedelta(
        milliseconds=1)
    assert (params["page"], params["pageSize"]) == ("1", "500")
    assert_secret_nowhere(db_url, MM_KEY, caplog.text)
    assert_replay_derives_the_same(db_url, "mm")


def assert_replay_derives_the_same(db_url: str, source: str) -> None:
    """The REST answers are frames like the others: replay derives them again, through the adapter
    of the request stored with each, to the rows the resync stored."""
    report = replay.check(source, url=db_url)
    assert report.clean, {t.table: t.examples for t in report.tables.values() if not t.clean}
    rest = count(db_url, "SELECT count(*) FROM raw_messages WHERE source = %s AND kind ~ '^(snapshot|backfill):'",
                 source)
    assert rest and report.frames >= rest


# -- rest_url as users write it (issue 23) -----------------------------------------------------------


def http_host(stream_url: str) -> str:
    """ws://127.0.0.1:port/… → http://127.0.0.1:port: the REST twin's host."""
    return "http://" + stream_url.removeprefix("ws://").split("/")[0]


def first_pass(simulator: OddsPapiSimulator | MmSimulator, db_url: str, tmp_path: Path,
               toml_for: Callable[[str], str], env: dict[str, str]) -> dict[str, Any]:
    """Collect until the start's resync is over; its resync_finished detail."""

    async def main() -> None:
        url = await simulator.start()
        collector = Collector(db_url, tmp_path, toml_for(url), env)
        await until(lambda: settled(db_url), "the start's resync")
        await collector.stop()
        await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    (finished,) = resyncs(db_url)
    return finished


@pytest.mark.parametrize("suffix", ["", "/v4"])
def test_oddspapi_rest_url_may_be_the_host_or_the_versioned_base(db_url: str, tmp_path: Path, suffix: str) -> None:
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))
    finished = first_pass(simulator, db_url, tmp_path,
                          lambda url: oddspapi_toml(url, rest_url=f'"{http_host(url)}{suffix}"'), {"OP_KEY": KEY})
    assert (finished["ok"], finished["failed"], finished["covered"]) == (8, 0, 4)
    assert {(path, status) for path, _, status in simulator.rest.calls} <= {("/v4/odds", 200), ("/v4/odds", 429),
                                                                          ("/v4/scores", 200), ("/v4/scores", 429)}


@pytest.mark.parametrize("suffix", ["", "/api/v1"])
def test_mm_rest_url_may_be_the_host_or_the_versioned_base(db_url: str, tmp_path: Path, suffix: str) -> None:
    simulator = MmSimulator({MM_KEY: CHANNELS}, rate=50)
    order = simulator.trade()  # an order, its bet and an account for the first resync to fetch
    finished = first_pass(simulator, db_url, tmp_path,
                          lambda url: mm_toml(url, rest_url=f'"{http_host(url)}{suffix}"'), {"MM_KEY": MM_KEY})
    assert (finished["ok"], finished["failed"], finished["covered"]) == (3, 0, 3)
    assert sorted((path, status) for path, _, status in simulator.rest.calls) == [
        ("/api/v1/accounts", 200), ("/api/v1/bets", 200), ("/api/v1/orders", 200)]
    assert count(db_url, "SELECT count(*) FROM order_changes WHERE origin = 'snapshot' AND order_id = %s",
                 str(order)) == 1


def test_a_404_is_one_warning_per_endpoint_and_pass_naming_the_url(db_url: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    # A version the vendor does not serve: every call of both endpoints answers 404.
    simulator = OddsPapiSimulator(KEY, rate=100, market=Market(run=RUN))
    host: list[str] = []

    def toml_for(url: str) -> str:
        host.append(http_host(url))
        return oddspapi_toml(url, rest_url=f'"{host[0]}/v5"')

    with caplog.at_level(logging.DEBUG):
        finished = first_pass(simulator, db_url, tmp_path, toml_for, {"OP_KEY": KEY})
    assert simulator.rest.calls == [], "no call reached an endpoint"
    assert (finished["calls"], finished["failed"], finished["retry"]) == (8, 8, 0)  # a 404 is not made again
    assert finished["not_found"] == {"/v4/odds": 4, "/v4/scores": 4}
    lines = [r for r in caplog.records if "HTTP 404" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.WARNING] * 2  # of 8: one per endpoint
    named = sorted(r.getMessage().split(" URL called: GET ")[1] for r in lines)
    assert named == [f"{host[0]}/v5{path}?fixtureId={FIXTURES[0]}&apiKey=***" for path in ("/v4/odds", "/v4/scores")]
    assert "rest_url is wrong" in lines[0].getMessage()
    assert_secret_nowhere(db_url, KEY, caplog.text)
