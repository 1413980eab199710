"""Replay: frames collected from the simulators, run again through the adapters — checked against
what is stored (from PostgreSQL and from the Parquet export), with an adapter changed on purpose,
rebuilt into a second database, killed half way and started again, and read from Python."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg
import pytest
from typer.testing import CliRunner

from tests.collecting import feeds_from_toml, run_collector
from tests.conftest import TEMPLATE, new_database, query
from warehouse import replay
from warehouse.cli import app
from warehouse.config import WriterSettings
from warehouse.feeds import oddspapi, saba
from warehouse.feeds.contract import FrameError
from warehouse.feeds.derive import derive
from warehouse.feeds.registry import FEEDS
from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle.export import export_all
from warehouse.lifecycle.pending import pending
from warehouse.records import CollectorEvent, ScoreChange
from warehouse.replay import rebuild
from warehouse.replay.shards import share
from warehouse.simulate.fleet import ENV, Fleet, fleet_vendors
from warehouse.simulate.oddspapi import OddsPapiSimulator
from warehouse.store.database import data_dir
from warehouse.store.embedded import EmbeddedPostgres
from warehouse.store.writer import Writer

RATES = {"oddspapi": 100, "saba": 40, "ckex": 20, "mm": 20}  # frames/s, by the fleet's feed names
SOURCES = [vendor.name for vendor in fleet_vendors()]
DERIVED = ("price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes", "bet_changes",
           "account_changes", "emergency_events", "collector_events", "quarantine")


def drop(server: EmbeddedPostgres, url: str) -> None:
    name = url.split("/")[3].split("?")[0]
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def warehouse(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def collected(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """All four vendors, with dropped connections and malformed frames, collected by the real
    collector until every feed has reconnected and quarantined a frame; then exported to Parquet."""
    pg_server = servers.get("pg18")
    url = new_database(pg_server, TEMPLATE)
    workdir = tmp_path_factory.mktemp("replay-collected")

    def enough() -> bool:
        (reconnected,), = query(url, "SELECT count(DISTINCT source) FROM collector_events"
                                     " WHERE event = 'reconnect_attempt'")
        (quarantined,), = query(url, "SELECT count(DISTINCT source) FROM quarantine")
        return reconnected == quarantined == len(SOURCES)

    async def main() -> None:
        fleet = Fleet(rates=RATES, faults=True)
        await fleet.start()
        try:
            feeds = feeds_from_toml(workdir, fleet.toml(silence_timeout_s=10, backoff_initial_s=0.05,
                                                        backoff_max_s=0.2), ENV)
            await run_collector(url, feeds, workdir / "spool", enough, timeout=90)
        finally:
            await fleet.stop()

    asyncio.run(asyncio.wait_for(main(), 120))
    export_all(url, workdir / "export", pending(url, EXPORT_TABLES, redo=True, today_too=True))
    yield url, workdir / "export"
    drop(pg_server, url)


def stored_rows(url: str, table: str, source: str) -> int:
    linked = "raw_id IS NOT NULL" if table in ("collector_events", "quarantine") else "true"
    return query(url, f"SELECT count(*) FROM {table} WHERE source = %s AND {linked}", source)[0][0]


@pytest.mark.parametrize("where", ["postgresql", "parquet"])
def test_check_is_clean_on_all_four_feeds(collected: tuple[str, Path], where: str) -> None:
    url, export = collected
    for source in SOURCES:
        report = replay.check(source, url=url, export_dir=export if where == "parquet" else None)
        problems = {t.table: t.examples for t in report.tables.values() if not t.clean}
        assert report.clean, f"{source} from {where}: {problems}"
        assert report.frames + report.carried == query(url, "SELECT count(*) FROM raw_messages WHERE source = %s",
                                                       source)[0][0]
        for table in DERIVED:
            tally = report.tables[table]
            # every stored row of the source's frames was derived again, except the quarantine rows
            # of frames whose text is not stored (cut short: not JSON), which are left out
            carried = query(url, "SELECT count(*) FROM quarantine q JOIN raw_messages r ON r.id = q.raw_id"
                                 " WHERE q.source = %s AND r.payload IS NULL", source)[0][0]
            expected = stored_rows(url, table, source) - (carried if table == "quarantine" else 0)
            assert tally.stored == tally.derived == tally.matched == expected, (source, table, tally)
        assert report.carried > 0  # the malformed frames: there is nothing to derive from again
        assert all(version == FEEDS[kind].version for kind, version in report.stored_versions)
        assert sum(report.stored_versions.values()) >= 2  # a reconnect: one fresh adapter per connection
    # the collector events frames derive are compared too: Saba's snapshot, MM's subscription
    saba_events = replay.check("saba", url=url).tables["collector_events"]
    mm_events = replay.check("mm", url=url).tables["collector_events"]
    assert saba_events.matched >= 1 and mm_events.matched >= 1


def test_check_from_the_command_line(collected: tuple[str, Path]) -> None:
    url, export = collected
    result = warehouse("replay", "--source", "saba", "--check", url=url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"saba-sse: stored rows derived by version {saba.FEED.version} (" in result.stdout
    assert "result: every row matches" in result.stdout
    result = warehouse("replay", "--source", "ckex", "--check", "--from-parquet", str(export), url=url)
    assert result.returncode == 0 and "result: every row matches" in result.stdout, result.stdout + result.stderr
    result = warehouse("replay", "--source", "oddspapi", "--check", "--processes", "3", url=url)
    assert result.returncode == 0 and "result: every row matches" in result.stdout, result.stdout + result.stderr
    result = warehouse("replay", "--source", "nobody", "--check", url=url)
    assert result.returncode == 2
    assert "no frames of source 'nobody'" in result.stderr and "ckex, mm, oddspapi, saba" in result.stderr


def test_a_range_starting_inside_a_connection_brings_the_adapter_up_to_date_first(
        collected: tuple[str, Path]) -> None:
    """Saba remembers which event each market belongs to: a range that starts mid-connection must
    first run the connection's earlier frames through the adapter, or markets lose their fixture."""
    url, _ = collected
    connection, = query(url, "SELECT connection_id FROM raw_messages WHERE source = 'saba' ORDER BY received_at"
                             " LIMIT 1")[0]
    (since,), = query(url, "SELECT received_at FROM raw_messages WHERE connection_id = %s AND seq = 40", connection)
    report = replay.check("saba", since=since, url=url)
    assert report.clean, {t.table: t.examples for t in report.tables.values() if not t.clean}
    assert report.warmed == 39
    assert report.tables["price_ticks"].matched == query(
        url, "SELECT count(*) FROM price_ticks WHERE source = 'saba' AND received_at >= %s", since)[0][0]


def test_a_changed_adapter_is_reported_with_the_raw_ids_and_versions(collected: tuple[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A deliberate change: outcome 101's price moves, and frames with scores no longer fit."""
    url, export = collected
    tick = oddspapi.Adapter._tick

    def changed_tick(self: oddspapi.Adapter, *args: Any) -> Any:
        row = tick(self, *args)
        return row._replace(price=(row.price or 0) + 1) if row.outcome_id == "101" else row

    def no_scores(self: oddspapi.Adapter, *args: Any) -> list[ScoreChange]:
        raise FrameError("scores: a new shape")

    monkeypatch.setattr(oddspapi.Adapter, "_tick", changed_tick)
    monkeypatch.setattr(oddspapi.Adapter, "_scores", no_scores)
    collected_version, changed_version = oddspapi.FEED.version, "changed"
    monkeypatch.setattr(oddspapi.FEED, "version", changed_version)
    with_scores = "raw_id IN (SELECT raw_id FROM score_changes WHERE source = 'oddspapi')"
    scored = query(url, "SELECT count(DISTINCT raw_id) FROM score_changes WHERE source = 'oddspapi'")[0][0]
    moved = query(url, "SELECT count(*) FROM price_ticks WHERE source = 'oddspapi' AND outcome_id = '101'"
                       f" AND NOT {with_scores}")[0][0]
    lost_ticks = query(url, f"SELECT count(*) FROM price_ticks WHERE source = 'oddspapi' AND {with_scores}")[0][0]
    first_moved = query(url, "SELECT min(raw_id) FROM price_ticks WHERE source = 'oddspapi' AND outcome_id = '101'"
                             f" AND NOT {with_scores}")[0][0]
    # A resync's /v4/scores answers (if the collection made one) go through the REST adapter, unchanged.
    (rest_frames, rest_rows), = query(url, "SELECT count(DISTINCT s.raw_id), count(*) FROM score_changes s"
                                           " JOIN raw_messages r ON r.id = s.raw_id"
                                           " WHERE s.source = 'oddspapi' AND r.kind ~ '^snapshot:'")
    assert scored - rest_frames > 0 and moved > 0
    for export_dir in (None, export):
        report = replay.check("oddspapi", url=url, export_dir=export_dir)
        assert not report.clean
        ticks, scores = report.tables["price_ticks"], report.tables["score_changes"]
        assert (ticks.differ, ticks.missing, ticks.extra) == (moved, lost_ticks, 0)
        assert (scores.missing, scores.extra, scores.matched) == (
            stored_rows(url, "score_changes", "oddspapi") - rest_rows, 0, rest_rows)
        assert report.tables["quarantine"].extra == scored - rest_frames  # each such frame is quarantined now
        assert report.tables["raw_messages"].differ == scored - rest_frames  # and its kind is "quarantined"
        kinds = report.tables["raw_messages"]  # every other frame's kind matches (counted, not compared as rows)
        assert (kinds.derived, kinds.stored, kinds.matched, kinds.missing, kinds.extra) == (
            report.frames, report.frames, report.frames - (scored - rest_frames), 0, 0)
        assert report.today == {"oddspapi-ws": changed_version}
        assert set(report.stored_versions) == {("oddspapi-ws", collected_version)}
    result = CliRunner().invoke(app, ["--database-url", url, "replay", "--source", "oddspapi", "--check"])
    assert result.exit_code == 1, result.output
    assert f"stored rows derived by version {collected_version}" in result.output
    assert f"today's adapter is version {changed_version}" in result.output
    assert f"price_ticks: raw_id {first_moved}: price: " in result.output
    assert "quarantine: raw_id " in result.output and "does not fit the oddspapi-ws schema: scores: a new shape" \
        in result.output
    assert "result: " in result.output and "rows do not match" in result.output


def test_connections_shared_out_among_processes_report_as_one_process(collected: tuple[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`--check` derives in forked processes, each its share of the connections: same counts, same
    differences found, as deriving in one (with a changed adapter, so that there are differences)."""
    url, export = collected
    tick = oddspapi.Adapter._tick

    def changed_tick(self: oddspapi.Adapter, *args: Any) -> Any:
        row = tick(self, *args)
        return row._replace(price=(row.price or 0) + 1) if row.outcome_id == "102" else row

    monkeypatch.setattr(oddspapi.Adapter, "_tick", changed_tick)  # seen by the forked processes too
    frames = query(url, "SELECT count(*), count(DISTINCT connection_id) FROM raw_messages WHERE source = 'oddspapi'")
    assert frames[0][1] >= 2  # something to share out
    for export_dir in (None, export):
        one, several = (replay.check("oddspapi", url=url, export_dir=export_dir, processes=n) for n in (1, 3))
        assert several.frames == one.frames == frames[0][0] - one.carried
        assert several.tables["price_ticks"].differ > 0
        for table, tally in one.tables.items():
            other = several.tables[table]
            assert (other.stored, other.derived, other.matched, other.missing, other.extra, other.differ) == (
                tally.stored, tally.derived, tally.matched, tally.missing, tally.extra, tally.differ), table
            assert [line.split(":")[0] for line in other.examples] == [line.split(":")[0] for line in tally.examples]
        assert (several.stored_versions, several.warmed, several.today) == (one.stored_versions, one.warmed, one.today)


def test_a_changed_a_duplicated_a_missing_and_a_stray_row_are_found_however_the_frames_are_shared_out(
        db_url: str, tmp_path: Path) -> None:
    """Each process compares the rows of its own frames with the stored rows of those frames: one
    changed row, one stored twice, one not stored and one whose raw_id is no frame are each found,
    and reported the same by one process and by three, from PostgreSQL and from Parquet."""

    async def main() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            at = datetime.now(UTC) - timedelta(minutes=5)
            generate = OddsPapiSimulator("key", outcomes_per_frame=2)._frames()
            options = {"url": "wss://example.invalid/ws", "api_key_env": "KEY"}
            feed = oddspapi.FEED
            for _ in range(3):
                connection = uuid4()
                await writer.put(None, [CollectorEvent(at, "oddspapi", connection, "connect", {
                    "feed_kind": feed.kind, "adapter_version": feed.version, "options": options})])
                adapter = feed.adapter("oddspapi", feed.options(**options))
                for seq in range(1, 41):
                    at += timedelta(milliseconds=5)
                    done = derive(adapter, feed.kind, next(generate), received_at=at, source="oddspapi",
                                  connection_id=connection, seq=seq, event_id=None, max_frame_bytes=1 << 20)
                    await writer.put(done.raw, done.records)

    asyncio.run(main())
    ticks = query(db_url, "SELECT raw_id, outcome_id FROM price_ticks ORDER BY raw_id, outcome_id")
    assert len(ticks) > 60
    # rows of the first, second and last connection's frames
    changed, twice, stray, gone = (ticks[len(ticks) * k // 6] for k in (1, 3, 4, 5))
    stray_id = query(db_url, "SELECT max(id) + 1000 FROM raw_messages")[0][0]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the tables are append-only: not here
        where = "WHERE raw_id = %s AND outcome_id = %s"
        conn.execute(f"UPDATE price_ticks SET price = price + 1 {where}", changed)
        conn.execute(f"INSERT INTO price_ticks SELECT * FROM price_ticks {where}", twice)
        conn.execute(f"DELETE FROM price_ticks {where}", gone)
        conn.execute(f"INSERT INTO price_ticks SELECT (p).* FROM (SELECT p FROM price_ticks p {where}) x", stray)
        conn.execute("UPDATE price_ticks SET raw_id = %s WHERE ctid = (SELECT max(ctid) FROM price_ticks"
                     f" {where})", [stray_id, *stray])
    export = tmp_path / "export"
    export_all(db_url, export, pending(db_url, EXPORT_TABLES, redo=True, today_too=True))
    for where in (None, export):
        one, several = (replay.check("oddspapi", url=db_url, export_dir=where, processes=n) for n in (1, 3))
        for report in (one, several):
            tally = report.tables["price_ticks"]
            assert report.frames == 120 and not report.clean
            assert (tally.differ, tally.missing, tally.extra) == (1, 2, 1), (where, tally)
            assert tally.stored == tally.derived + 1 == len(ticks) + 1
            assert all(t.clean for name, t in report.tables.items() if name != "price_ticks")
            assert [line.split(":")[0] for line in tally.examples] == [
                f"raw_id {changed[0]}", f"raw_id {twice[0]}", f"raw_id {gone[0]}", f"raw_id {stray_id}"], \
                tally.examples
        assert several.tables["price_ticks"] == one.tables["price_ticks"]


def test_shares_balance_frames_and_agree_in_every_process() -> None:
    connections = [("a", 10), ("b", 40), ("c", 30), ("d", 20)]
    assert share(connections, 2) == [["b", "a"], ["c", "d"]]  # 50 frames each
    assert share(list(reversed(connections)), 2) == share(connections, 2)
    assert share(connections, 1) == [["b", "c", "d", "a"]]
    assert share([("a", 5)], 3) == [["a"], [], []]


def test_into_a_second_database_gives_the_same_rows(collected: tuple[str, Path], pg_server: EmbeddedPostgres) -> None:
    url, export = collected
    target = new_database(pg_server, TEMPLATE)
    try:
        for source in SOURCES:
            result = warehouse("replay", "--source", source, "--into", target, url=url)
            assert result.returncode == 0, result.stdout + result.stderr
        assert "connection lifecycle events" in result.stdout
        for table in ("raw_messages", *DERIVED):
            assert frame_rows(target, table) == frame_rows(url, table), table
        # the gaps are there as they were: every connect, disconnect, reconnect attempt
        lifecycle = ("SELECT source, received_at, connection_id, event FROM collector_events WHERE raw_id IS NULL"
                     " ORDER BY 1, 2, 3, 4")
        assert query(target, lifecycle) == query(url, lifecycle)
        connects = query(target, "SELECT detail FROM collector_events WHERE event = 'connect'")
        assert len(connects) >= 2 * len(SOURCES)
        for (detail,) in connects:
            assert detail["adapter_version"] == FEEDS[detail["feed_kind"]].version
            assert detail["replayed"]["adapter_version_collected"] == FEEDS[detail["feed_kind"]].version
        for source in SOURCES:  # and the rebuilt warehouse checks clean against today's adapters
            assert replay.check(source, url=target).clean
        # again: nothing is written twice
        result = warehouse("replay", "--source", "mm", "--into", target, "--from-parquet", str(export), url=url)
        assert result.returncode == 0 and "skipped what the target held already" in result.stdout, result.stdout
        assert frame_rows(target, "raw_messages") == frame_rows(url, "raw_messages")
    finally:
        drop(pg_server, target)
    # deriving in a process of its own (the default from three cores) gives the same as deriving in
    # the writing process (the command's default above, on fewer)
    target = new_database(pg_server, TEMPLATE)
    try:
        for source in SOURCES:
            rebuild.into(replay.open_stored(url, export), target, source,
                         processes=1 if rebuild._deriving(None) == 2 else 2)
        for table in ("raw_messages", *DERIVED):
            assert frame_rows(target, table) == frame_rows(url, table), table
    finally:
        drop(pg_server, target)


def frame_rows(url: str, table: str) -> Counter[tuple[Any, ...]]:
    """Every row of `table`, its raw id replaced by its frame's (connection_id, seq): ids differ
    between databases, frames do not."""
    columns = [c for (c,) in query(url, "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                                        " AND column_name NOT IN ('id', 'raw_id') ORDER BY ordinal_position", table)]
    if table == "raw_messages":
        rows = query(url, f"SELECT {', '.join(columns)} FROM raw_messages")
    else:
        rows = query(url, f"SELECT r.connection_id, r.seq, {', '.join('t.' + c for c in columns)} FROM {table} t"
                          " JOIN raw_messages r ON r.id = t.raw_id")
    return Counter(orjson.dumps(row, default=str) for row in rows)


def write_oddspapi(url: str, spool: Path, frames: int, connections: int) -> None:
    """Frames of the OddsPapi simulator's market, derived and written as the collector does."""
    generate = OddsPapiSimulator("key", outcomes_per_frame=2)._frames()
    options = {"url": "ws://127.0.0.1/v4/ws", "api_key_env": "OP_KEY"}

    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=spool)) as writer:
            at = datetime.now(UTC) - timedelta(hours=1)
            for _ in range(connections):
                connection, adapter = uuid4(), oddspapi.FEED.adapter("oddspapi", None)
                await writer.put(None, [CollectorEvent(at, "oddspapi", connection, "connect", {
                    "feed_kind": "oddspapi-ws", "adapter_version": oddspapi.FEED.version, "options": options})])
                for seq in range(1, frames // connections + 1):
                    at += timedelta(microseconds=200)
                    done = derive(adapter, "oddspapi-ws", next(generate), received_at=at, source="oddspapi",
                                  connection_id=connection, seq=seq, event_id=None, max_frame_bytes=1 << 20)
                    await writer.put(done.raw, done.records)
                await writer.put(None, [CollectorEvent(at, "oddspapi", connection, "disconnect", {"reason": "test"})])

    asyncio.run(main())


# The replay's first commit comes after a few dozen frames (64 in a run of 60,000 under load 8) and the kill
# follows within a poll (20 ms): 21,000 frames leave it most of its work still to do, at a third of the time.
KILLED_FRAMES = 21_000  # 7,000 on each of the 3 connections


def test_a_replay_killed_half_way_and_started_again_writes_every_frame_once(
        pg_server: EmbeddedPostgres, db_url: str, tmp_path: Path) -> None:
    write_oddspapi(db_url, tmp_path / "spool", KILLED_FRAMES, 3)
    target = new_database(pg_server, TEMPLATE)
    try:
        argv = [sys.executable, "-m", "warehouse", "--database-url", db_url, "replay", "--source", "oddspapi",
                "--into", target]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while query(target, "SELECT count(*) FROM raw_messages")[0][0] == 0:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the replay wrote nothing in 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        written = query(target, "SELECT count(*) FROM raw_messages")[0][0]
        assert 0 < written < KILLED_FRAMES  # killed half way
        result = warehouse("replay", "--source", "oddspapi", "--into", target, url=db_url)
        assert result.returncode == 0, result.stderr
        assert f"skipped what the target held already (an earlier run): {written:,} frames" in result.stdout
        assert query(target, "SELECT count(*), count(DISTINCT (connection_id, seq)) FROM raw_messages") == [
            (KILLED_FRAMES, KILLED_FRAMES)]
        for table in ("raw_messages", *DERIVED):
            assert frame_rows(target, table) == frame_rows(db_url, table), table
        lifecycle = "SELECT received_at, connection_id, event FROM collector_events WHERE raw_id IS NULL ORDER BY 1"
        assert query(target, lifecycle) == query(db_url, lifecycle)  # six events, each once
        # the killed run's spool (empty: the target was up) is gone with the run that finished
        assert not list((data_dir() / "spool").glob("replay-oddspapi-*"))
    finally:
        drop(pg_server, target)


def test_the_python_api_yields_the_records_of_a_range(collected: tuple[str, Path]) -> None:
    url, export = collected
    (since,), = query(url, "SELECT received_at FROM raw_messages WHERE source = 'oddspapi' ORDER BY received_at"
                           " OFFSET 100 LIMIT 1")
    until = since + timedelta(seconds=2)
    stored = query(url, "SELECT received_at, fixture_id, market_id, outcome_id, price FROM price_ticks"
                        " WHERE source = 'oddspapi' AND received_at >= %s AND received_at < %s", since, until)
    assert stored
    for where in ({"url": url}, {"export_dir": export}):
        ticks = [(r.received_at, r.fixture_id, r.market_id, r.outcome_id, r.price)
                 for r in replay.records("oddspapi", since=since, until=until, **where) if type(r).__name__ ==
                 "PriceTick"]
        assert Counter(ticks) == Counter(stored)
    frames = list(replay.frames("oddspapi", since=since, until=until, url=url))
    assert [f.raw_id for f in frames] == [i for (i,) in query(
        url, "SELECT id FROM raw_messages WHERE source = 'oddspapi' AND received_at >= %s AND received_at < %s"
             " ORDER BY received_at, connection_id, seq", since, until)]
    assert all(isinstance(f.raw.connection_id, UUID) for f in frames)


# Saba's two documented frames (tests/test_saba.py), and a reset.
SABA_FRAMES = [
    b'{"status":1,"message":"InitialData","payload":{"events":{"add":[{"eventId":38255274,"eventStatus":"running",'
    b'"isLive":true,"kickOffTime":"2024-05-01T12:00:00","gameInfo":{"livePeriod":1,"liveHomeScore":0,'
    b'"liveAwayScore":0}}]},"markets":{"add":[{"marketId":274175476,"eventId":38255274,"betType":1,'
    b'"marketStatus":"running","selections":[{"key":"h","point":0.5,"oddsPrice":{"decimalPrice":1.95}}]}]}}}',
    b'{"status":0,"message":"Success","payload":{"markets":{"change":[{"marketId":274175476,"marketStatus":"suspend",'
    b'"selections":[{"key":"h","point":0.5,"oddsPrice":{"decimalPrice":1.9}}]}]}}}',
    b'{"status":3,"message":"Reset","payload":{"events":{"add":[{"eventId":38255274,"eventStatus":"running"}]}}}',
    b'{"status":42,"message":"no such status"}',  # quarantined: its text is compared as JSON (jsonb respells it)
]


def test_rows_collected_before_replay_existed_check_clean_given_the_config(
        db_url: str, tmp_path: Path, pg_server: EmbeddedPostgres) -> None:
    """Before this version, a frame's snapshot/reset event was written after it, unlinked, and
    connect events recorded neither feed kind nor options: the config says what the feed was, and
    the events are matched to the frame they followed. A rebuild records what it was told."""
    connection = uuid4()

    async def main() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            at = datetime.now(UTC) - timedelta(minutes=5)
            await writer.put(None, [CollectorEvent(at, "saba-old", connection, "connect", {"url": "https://x"})])
            adapter = saba.FEED.adapter("saba-old", None)
            for seq, frame in enumerate(SABA_FRAMES, 1):
                at += timedelta(milliseconds=5)
                done = derive(adapter, "saba-sse", frame, received_at=at, source="saba-old", connection_id=connection,
                              seq=seq, event_id=str(seq), max_frame_bytes=1 << 20)
                events = [r for r in done.records if isinstance(r, CollectorEvent)]
                await writer.put(done.raw, [r for r in done.records if not isinstance(r, CollectorEvent)])
                for event in events:  # as the runner wrote them then: after the frame, on their own
                    await writer.put(None, [event._replace(received_at=at + timedelta(microseconds=150))])

    asyncio.run(main())
    with pytest.raises(ValueError, match="give --config with a \\[\\[feeds\\]\\] entry named 'saba-old'"):
        replay.check("saba-old", url=db_url)
    config = tmp_path / "old.toml"
    config.write_text('[[feeds]]\nname = "saba-old"\nkind = "saba-sse"\nurl = "https://x/GetEvents"\n'
                      'token_env = "SABA_TOKEN"\n')
    report = replay.check("saba-old", url=db_url, config=config)
    assert report.clean, {t.table: t.examples for t in report.tables.values() if not t.clean}
    assert report.tables["collector_events"].matched == 2  # the snapshot and the reset
    assert report.tables["quarantine"].matched == 1 and report.frames == 4
    assert report.stored_versions == {("saba-sse", None): 1}
    result = CliRunner().invoke(app, ["--database-url", db_url, "--config", str(config), "replay", "--source",
                                      "saba-old", "--check"])
    assert result.exit_code == 0, result.output
    assert "an unrecorded version (1 connection, collected before versions were recorded)" in result.output
    target = new_database(pg_server, TEMPLATE)
    try:
        done = replay.into(target, "saba-old", url=db_url, config=config)
        assert (done.frames, done.events) == (4, 1)
        (detail,), = query(target, "SELECT detail FROM collector_events WHERE event = 'connect'")
        assert detail["feed_kind"] == "saba-sse" and detail["adapter_version"] == saba.FEED.version
        assert detail["options"]["url"] == "https://x/GetEvents" and detail["replayed"]["adapter_version_collected"] \
            is None
        rebuilt = replay.check("saba-old", url=target)  # no config needed any more
        assert rebuilt.clean and rebuilt.tables["collector_events"].matched == 2
        assert rebuilt.stored_versions == {("saba-sse", saba.FEED.version): 1}
    finally:
        drop(pg_server, target)


def test_replay_refuses_unclear_requests(db_url: str) -> None:
    runner = CliRunner()
    both = runner.invoke(app, ["--database-url", db_url, "replay", "--source", "x", "--check", "--into", db_url])
    assert both.exit_code == 2 and "give either --check" in both.output
    alone = runner.invoke(app, ["--database-url", db_url, "replay", "--source", "x", "--into", "postgresql://h/d",
                                "--processes", "2"])
    assert alone.exit_code == 2 and "--processes applies to --check only" in alone.output
    same = runner.invoke(app, ["--database-url", db_url, "replay", "--source", "x", "--into", db_url])
    assert same.exit_code == 2 and "--into names the database the frames are read from" in same.output
    with pytest.raises(ValueError, match="--into names the database the frames are read from"):
        replay.into(db_url, "x", url=db_url)  # the Python API refuses it too
    when = runner.invoke(app, ["--database-url", db_url, "replay", "--source", "x", "--check", "--since", "May 1"])
    assert when.exit_code == 2 and "--since: expected a UTC day" in when.output


# Numbers exact from the wire (tests/test_exact_values.py), stored, then checked again: PostgreSQL writes
# them back its own way (1e400 as 401 digits, 1e-400 as 0.000…1, 1e2 as 100), in the frame and in jsonb.
WIDE, HUGE = "1234567890.123456789012345678", "19999999999999999999"
_PLAYER = ('{{"fixtureId":"f1","bookmakerOdds":{{"b":{{"markets":{{"101":{{"outcomes":{{"101":{{"players":{{"0":'
           '{{"price":{},"limit":{},"oddsId":{}}}}}}}}}}}}}}}}}}}')
EXACT_FRAMES = {
    "oddspapi-ws": [_PLAYER.format(*numbers).encode() for numbers in [
        ("2.59", WIDE, "1e400"), ("1.8500000000000000001", HUGE, "1e-400"), ("2.5", "1e2", "-0.0"),
        ("1e400", "null", "null"), ("1e-400", "null", "null"), ("0", "null", "null"),  # no price: quarantined,
        ("1e0", "null", "null"), ("-0.0", "null", "null"),  # with reasons that name 1.0 and -0.0: PostgreSQL's 1, 0.0
        ("2.5", "0.1234567890123456789", "null"),  # beyond the lake's decimal: quarantined
    ]],
    "mm-ws": [
        b'{"type":"broadcast","channel":"orders","event":"INSERT","payload":{"orderId":1,"orderCents":4.5e-1,'
        b'"orderStake":' + WIDE.encode() + b',"matchedStake":' + HUGE.encode() + b',"fees":[1e-400,1e400]}}',
        b'{"type":"broadcast","channel":"orders","event":"UPDATE","payload":{"orderId":1,"matchedStake":1e2}}',
        b'{"type":"broadcast","channel":"bets","event":"INSERT","payload":{"betId":2,"placedPrice":1.0}}',
    ],
}


def test_exact_numbers_check_clean_from_postgresql_and_parquet(db_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            at = datetime.now(UTC) - timedelta(minutes=5)
            for kind, frames in EXACT_FRAMES.items():
                feed, connection = FEEDS[kind], uuid4()
                options = {"url": "wss://example.invalid/ws", "api_key_env": "KEY"}
                await writer.put(None, [CollectorEvent(at, kind, connection, "connect", {
                    "feed_kind": kind, "adapter_version": feed.version, "options": options})])
                adapter = feed.adapter(kind, feed.options(**options))
                for seq, frame in enumerate(frames, 1):
                    at += timedelta(milliseconds=5)
                    done = derive(adapter, kind, frame, received_at=at, source=kind, connection_id=connection,
                                  seq=seq, event_id=None, max_frame_bytes=1 << 20)
                    await writer.put(done.raw, done.records)

    asyncio.run(main())
    assert query(db_url, "SELECT max_stake::text, attrs->>'oddsId' FROM price_ticks ORDER BY received_at") == [
        (WIDE, "1" + "0" * 400), (HUGE, "0." + "0" * 399 + "1"), ("100.0", "0.0")]
    assert query(db_url, "SELECT price::text, stake::text, matched_stake::text, payload->>'orderStake',"
                         " payload->>'matchedStake' FROM order_changes ORDER BY received_at") == [
        ("0.45", WIDE, HUGE, WIDE, HUGE), (None, None, "100.0", None, "100.0")]
    assert query(db_url, "SELECT count(*) FROM quarantine") == [(7,)]
    export = tmp_path / "export"
    export_all(db_url, export, pending(db_url, EXPORT_TABLES, redo=True, today_too=True))
    for kind, frames in EXACT_FRAMES.items():
        for where in (None, export):
            report = replay.check(kind, url=db_url, export_dir=where)
            assert report.clean, (kind, where, {t.table: t.examples for t in report.tables.values() if not t.clean})
            assert report.frames == len(frames) and report.carried == 0  # every frame derived again


def test_check_from_the_export_in_a_bucket(collected: tuple[str, Path], aws: Any, prefix: str) -> None:
    """Replay reads a lake in an S3 bucket in place (issue 25), as it reads a directory."""
    url, _ = collected
    root = aws.url(prefix)
    export_all(url, root, pending(url, EXPORT_TABLES, redo=True, today_too=True))
    result = warehouse("replay", "--source", "ckex", "--check", "--from-parquet", root, url=url)
    assert result.returncode == 0 and "result: every row matches" in result.stdout, result.stdout + result.stderr
    report = replay.check("mm", url=url, export_dir=root)
    assert report.clean and report.frames > 0


def test_stored_rows_are_spelled_alike_in_sql_and_from_arrow() -> None:
    """Stored rows from Parquet reach the comparison through SQL (rows.stored_select, a frame's text
    through a DuckDB function), from PostgreSQL as Arrow (rows.stored_batch): both give the same
    text: a quarantined frame's canonical, JSON as stored (compared first as PostgreSQL spells it),
    and canonical_select makes that JSON canonical in SQL as canonical_stored_json does."""
    import duckdb
    import pyarrow as pa

    from warehouse.replay import rows

    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    frames = [None, "not JSON {", '{"b": 1, "a": [1.50, {"d": null, "c": 2}], "e": 123456789012345678901234567890}',
              '{"b": 1, "a": [1.50, {"d": null, "c": 2}], "e": 123456789012345678901234567890}', "null", '"x"']
    columns = {c.name: [None] * len(frames) for c in rows.COLUMNS["quarantine"]}
    columns |= {"received_at": [at] * len(frames), "raw_id": list(range(len(frames))), "frame": frames}
    batch = pa.RecordBatch.from_pydict({c.name: pa.array(columns[c.name], c.arrow) for c in rows.COLUMNS["quarantine"]})
    con = duckdb.connect()
    rows.register(con)
    con.register("stored", batch)
    in_sql = con.execute(f"SELECT {rows.stored_select('quarantine')} FROM stored ORDER BY raw_id").to_arrow_table()
    from_arrow = rows.stored_batch("quarantine", batch)
    assert in_sql.column("frame").to_pylist() == from_arrow.column("frame").to_pylist() == [
        None, "not JSON {", '{"a":[1.5,{"c":2,"d":null}],"b":1,"e":123456789012345678901234567890}',
        '{"a":[1.5,{"c":2,"d":null}],"b":1,"e":123456789012345678901234567890}', "null", '"x"']
    attrs = pa.array([None, '{"z": {"y": 2, "x": 1}, "a": 0.1000000000000000001}', "[]"], pa.string())
    ticks = {c.name: pa.nulls(3, c.arrow) for c in rows.COLUMNS["price_ticks"]} | {"attrs": attrs}
    con.register("ticks", pa.table(ticks))
    spelled = con.execute(f"SELECT {rows.stored_select('price_ticks')} FROM ticks").to_arrow_table().column("attrs")
    assert spelled.to_pylist() == rows.stored_batch("price_ticks", pa.RecordBatch.from_pydict(ticks)).column(
        "attrs").to_pylist() == attrs.to_pylist()
    canonical = con.execute(f"SELECT {rows.canonical_select('price_ticks', 'stored')} FROM ticks").to_arrow_table()
    assert canonical.column("attrs").to_pylist() == [None, '{"a":0.1000000000000000001,"z":{"x":1,"y":2}}', "[]"]


# JSON values as adapters give them: PostgreSQL's jsonb text of each is what `rows.stored_spelling`
# must write (the first, cheap step of the comparison), and whatever it writes must come back to
# `canonical_json` (the second step).
SPELLED_LIKE_POSTGRESQL: list[Any] = [
    {"betslip": None, "bookmakerOutcomeId": "557310700002101", "bookmakerChangedAt": "2026-12-06T16:46:15.039Z",
     "playerName": None, "priceAmerican": "+231", "priceFractional": "231/100", "mainLine": True,
     "exchangeMeta": {}, "playerId": 0},
    {"b": 1, "a": 2}, {"zz": 2, "é": 1, "ab": 3, "b": [], "%b": "%s"},  # é: two bytes, sorted as such
    {"outer": {"yy": [1, {"k": "v", "j": None}], "x": 1.5}, "n": [], "t": "line\nbreak \"quoted\" \u0007 ü"},
    {"price": 3.31, "neg": -2.5, "big": 9007199254740993, "small": 0.25, "f": False},
    [1, "x", None, {"b": 1, "a": True}], "text", 5, 2.59, {}, [], {"one": {"only": 1}},
]
NOT_SPELLED_LIKE_POSTGRESQL: list[Any] = [
    {"a": 1e16, "b": 1}, {"a": Decimal("1.50"), "b": 2}, {"a": Decimal("0.1000000000000000001"), "b": 2},
    {"a": 123456789012345678901234567890, "b": 1}, {1: "x", "a": 2}, {"a": [1, -0.0]},
]


def test_derived_json_is_spelled_as_postgresql_stores_it(db_url: str) -> None:
    from warehouse import exactjson
    from warehouse.replay import rows

    values = SPELLED_LIKE_POSTGRESQL + NOT_SPELLED_LIKE_POSTGRESQL
    with psycopg.connect(db_url) as conn:  # as the writer stores them: exactjson's text into jsonb
        stored = [conn.execute("SELECT %s::jsonb::text", [exactjson.dumps(v).decode()]).fetchone()[0]  # type: ignore[index]
                  for v in values]
    for value, text in zip(values, stored, strict=True):
        spelled = rows.stored_spelling(value)
        assert rows.canonical_spelled(spelled) == rows.canonical_json(value), value
        if value in SPELLED_LIKE_POSTGRESQL:
            assert spelled == text, value
        else:
            assert spelled != text, value  # matched in the canonical step instead
            assert rows.canonical_spelled(spelled) == rows.canonical_json(value)
    assert rows.stored_spelling({"a": Decimal("1.50"), "b": 2}) == rows.UNSPELLED + '{"a":1.50,"b":2}'


def _attrs_check(derived: list[Any], stored: list[str | None]) -> Any:
    """Each derived attrs against each stored text, as price_ticks rows of frames 1, 2, …: the tally."""
    import pyarrow as pa

    from warehouse.records import PriceTick
    from warehouse.replay import compare, rows

    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    gathered = rows.RowsByTable()
    for raw_id, attrs in enumerate(derived, 1):
        gathered.add(raw_id, "odds", "odds", [PriceTick(at, "s", "b", "f", "m", "o", 2.5, attrs=attrs)])
    tables, kinds, same_kinds = gathered.tables()
    with tempfile_dir() as spill, compare._Comparison(spill) as comparison:
        comparison.add_derived(tables, kinds, same_kinds)
        ticks = tables["price_ticks"][0]
        stored_ticks = ticks.set_column(ticks.schema.get_field_index("attrs"), "attrs", pa.array(stored, pa.string()))
        for batch in stored_ticks.to_batches():
            comparison._insert("stored_price_ticks", rows.stored_batch("price_ticks", batch))
        part = compare.Part()
        comparison.compare(part)
    tally = part.tallies["price_ticks"]
    tally.examples = [line for _, line in part.examples.get("price_ticks", [])]
    return tally


@contextlib.contextmanager
def tempfile_dir() -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="replay-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_json_matched_as_text_first_keeps_the_rule_of_values() -> None:
    """A row whose JSON is stored as PostgreSQL spells it matches in the first step; one spelled
    otherwise (keys in another order, other spacing, 1.50 for 1.5, 1e2 for 100.0) in the second, as
    the values are the same under the canonical rule; a changed digit, a Decimal against its float,
    JSON null against SQL NULL, or a missing key differ, whichever step they reach."""
    derived: list[Any] = [
        {"b": 1, "a": "x"}, {"b": 1, "a": "x"}, {"price": 1.5, "k": 1}, {"price": 1.5, "k": 1},
        {"n": 1e16, "k": 1}, {"big": Decimal("0.1000000000000000001"), "k": 1}, None, None, {"b": 1, "a": "x"},
        # differ:
        {"price": 1.5, "k": 1}, {"price": 0.1, "k": 1}, {"big": Decimal("0.1000000000000000001"), "k": 1},
        {"b": 1, "a": "x"}, None, {"b": 1, "a": "x"}, {"a": "x", "b": 1, "c": None},
    ]
    stored = [
        '{"a": "x", "b": 1}', '{"b":1,"a":"x"}', '{"k": 1, "price": 1.5}', '{"k": 1, "price": 1.50}',
        '{"k": 1, "n": 10000000000000000}', '{"k": 1, "big": 0.1000000000000000001}', None, None,
        '{\n "b" : 1 , "a":"x"}',
        '{"k": 1, "price": 1.51}', '{"k": 1, "price": 0.1000000000000000001}', '{"k": 1, "big": 0.1}',
        "null", "null", '{"a": "x"}', '{"a": "x", "b": 1}',
    ]
    tally = _attrs_check(derived, stored)
    assert (tally.derived, tally.stored, tally.matched, tally.differ, tally.missing, tally.extra) == (
        16, 16, 9, 7, 0, 0), tally
    assert [line.split(":")[0] for line in tally.examples] == [f"raw_id {n}" for n in range(10, 15)], tally.examples
    assert "price" in tally.examples[0] and "1.51" in tally.examples[0]  # shown as canonical text, as before
