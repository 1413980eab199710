"""Fault injection with real processes: all four simulated vendors streaming, a collector process,
a private PostgreSQL that the test stops, and a collector the test kills. What was sent is counted
by the simulators and compared with what the warehouse stored."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from tests.collecting import assert_secret_nowhere
from tests.conftest import query
from tests.harness import CollectorProcess
from warehouse.config import config_from_text
from warehouse.feeds.contract import RestCall, is_rest_kind
from warehouse.feeds.derive import derive
from warehouse.feeds.registry import FEEDS
from warehouse.records import TABLE_OF
from warehouse.simulate.fleet import ENV, FleetThread
from warehouse.store.embedded import EmbeddedPostgres

RATES = {"oddspapi": 100, "saba": 40, "ckex": 20, "mm": 20}  # frames/s, by the fleet's feed names


@pytest.fixture
def server(private_server: EmbeddedPostgres) -> EmbeddedPostgres:
    return private_server


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def stored(url: str) -> dict[str, int]:
    """Frames of the streams stored per source (REST answers of resyncs are frames too, not sent on the streams)."""
    return dict(query(url, "SELECT source, count(*) FROM raw_messages WHERE kind !~ '^(snapshot|backfill):'"
                           " GROUP BY source"))


def all_stored(url: str, sent: dict[str, int]) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return stored(url) == sent
        except Exception:
            return False
    return check


def assert_once_each_and_derived_rows_match(url: str, fleet_toml: str) -> None:
    """No frame twice (per connection, seq is unique), and re-deriving every stored frame with its
    adapter gives exactly the rows each table holds for that source. A REST answer is routed by its
    kind to the feed's REST adapter, with the request read back from its event_id (as replay does)."""
    assert query(url, "SELECT count(*) FROM (SELECT connection_id, seq FROM raw_messages"
                      " GROUP BY 1, 2 HAVING count(*) > 1) AS twice") == [(0,)]
    for feed in config_from_text(fleet_toml, "the fleet").feeds:
        source = feed.name
        expected: Counter[str] = Counter()
        adapter, connection = None, None
        for connection_id, seq, received_at, kind, event_id, payload in query(
                url, "SELECT connection_id, seq, received_at, kind, event_id, payload::text FROM raw_messages"
                     " WHERE source = %s ORDER BY received_at, connection_id, seq", source):
            if payload is None:
                continue
            if is_rest_kind(kind):
                rest = feed.feed.rest_adapter(source, feed.options, RestCall.stored(kind, event_id))
                derived = derive(rest, feed.kind, payload.encode(), received_at=received_at, source=source,
                                 connection_id=connection_id, seq=seq, event_id=event_id, max_frame_bytes=2**30,
                                 kind=kind)
                expected.update(TABLE_OF[type(record)] for record in derived.records)
                continue
            if connection_id != connection:
                adapter, connection = feed.feed.adapter(source, feed.options), connection_id
            derived = derive(adapter, feed.kind, payload.encode(), received_at=received_at, source=source,
                             connection_id=connection_id, seq=seq, event_id=None, max_frame_bytes=2**30)
            expected.update(TABLE_OF[type(record)] for record in derived.records)
        for table, rows in expected.items():
            if table in ("collector_events", "quarantine"):
                continue  # also written by the runtime itself
            got = query(url, f"SELECT count(*) FROM {table} WHERE source = %s", source)[0][0]
            assert got == rows, f"{source}: {table} has {got} rows, its frames derive {rows}"
        assert expected, f"{source} stored no rows"


def test_a_database_outage_while_all_four_feeds_stream_loses_nothing(server: EmbeddedPostgres,
                                                                     tmp_path: Path) -> None:
    url = server.url()
    with FleetThread(RATES) as vendors:
        collector = CollectorProcess(url, tmp_path, vendors.fleet)
        collector.start()
        wait_for(lambda: len(stored(url)) == len(FEEDS), 60, "frames from all four feeds")
        server.stop("immediate")  # a crash, not a polite shutdown
        outage_started = time.monotonic()
        time.sleep(30)
        assert any(collector.spool.rglob("*.spool")), "frames received during the outage are spooled"
        server.start()
        time.sleep(3)  # the vendors go on a little while the backlog replays
        sent = vendors.stop_sending()
        wait_for(all_stored(url, sent), 90, f"every frame sent ({sent}) to be stored")
        assert collector.signal(signal.SIGTERM) == 0
    assert time.monotonic() - outage_started > 30
    assert stored(url) == sent and min(sent.values()) > 100
    assert_once_each_and_derived_rows_match(url, vendors.fleet.toml())
    assert query(url, "SELECT count(*) FROM collector_events WHERE event = 'dropped'") == [(0,)]


def test_a_killed_collector_restarts_without_loss_or_duplicates_and_the_gap_is_recorded(
        server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = server.url()
    with FleetThread(RATES) as vendors:
        collector = CollectorProcess(url, tmp_path, vendors.fleet)
        collector.start()
        wait_for(lambda: min(stored(url).values(), default=0) > 20 and len(stored(url)) == len(FEEDS), 60, "frames")
        killed_at = datetime.now(UTC)
        assert collector.signal(signal.SIGKILL) == -signal.SIGKILL
        filled = vendors.call(_trade(vendors.fleet.simulators["mm"]))  # while no collector runs
        time.sleep(2)
        collector.start()
        wait_for(lambda: query(url, "SELECT count(*) FROM collector_events WHERE event = 'connect'"
                                    " AND received_at > %s", killed_at)[0][0] >= len(FEEDS), 60, "every feed back")
        wait_for(lambda: query(url, "SELECT count(*) FROM collector_events WHERE event = 'resync_finished'"
                                    " AND received_at > %s AND detail->>'reason' = 'start'", killed_at)[0][0] >= 2,
                 60, "the restarted collector's resyncs")
        time.sleep(3)
        vendors.stop_sending()
        saba_ids = [i for ids in vendors.fleet.simulators["saba"].sent.values() for i in ids]
        wait_for(lambda: query(url, "SELECT count(*) FROM raw_messages WHERE source = 'saba'")[0][0]
                 >= len(set(saba_ids)), 60, "saba caught up")
        assert collector.signal(signal.SIGTERM) == 0

    # The restarted process owns the killed one's spool directory, which proves that one gone: it took
    # its feeds back at once, without waiting for their claims to expire.
    assert query(url, "SELECT DISTINCT detail->>'why' FROM collector_events WHERE event = 'handover'"
                      " AND received_at > %s", killed_at) == [("holder restarted",)]
    # Saba resumed from the last stored event id: every event once, none lost in the kill.
    stored_ids = [row[0] for row in query(url, "SELECT event_id FROM raw_messages WHERE source = 'saba'")]
    assert len(stored_ids) == len(set(stored_ids)) and set(stored_ids) == set(saba_ids)
    assert query(url, "SELECT count(*) FROM collector_events WHERE source = 'saba' AND event = 'resume'"
                      " AND received_at > %s", killed_at)[0][0] >= 1
    # The WebSocket feeds record the time nobody listened: a disconnect dated at the last frame the
    # killed collector received, then the new process's connect.
    for source in ("oddspapi", "ckex", "mm"):
        gap = query(url, "SELECT received_at, detail->>'reason' FROM collector_events WHERE source = %s"
                         " AND event = 'disconnect' AND detail->>'reason' LIKE 'collector process ended%%'", source)
        assert len(gap) == 1, source
        last_before = query(url, "SELECT max(received_at) FROM raw_messages WHERE source = %s AND received_at <= %s",
                            source, killed_at)[0][0]
        assert gap[0][0] == last_before
        reconnected = query(url, "SELECT min(received_at) FROM collector_events WHERE source = %s"
                                 " AND event = 'connect' AND received_at > %s", source, killed_at)[0][0]
        assert reconnected is not None and reconnected > gap[0][0]
    # The restarted collector healed the gap over REST: the order filled while it was down is stored,
    # and each resync began from the killed collector's last frame.
    assert query(url, "SELECT event, order_status FROM order_changes WHERE order_id = %s", str(filled)) == [
        ("SNAPSHOT", "FILLED")]
    for source in ("oddspapi", "mm"):
        (started,), = query(url, "SELECT detail FROM collector_events WHERE source = %s AND event = 'resync_started'"
                                 " AND detail->>'reason' = 'start' AND received_at > %s", source, killed_at)
        last_before = query(url, "SELECT max(received_at) FROM raw_messages WHERE source = %s AND received_at <= %s",
                            source, killed_at)[0][0]
        assert datetime.fromisoformat(started["gap_started"]) == last_before, source
    assert_once_each_and_derived_rows_match(url, vendors.fleet.toml())


async def _trade(simulator: Any) -> int:
    return int(simulator.trade())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gauge(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_flood_faster_than_the_database_is_held_back_and_shows_in_the_metrics(
        server: EmbeddedPostgres, tmp_path: Path) -> None:
    url, port = server.url(), free_port()
    with FleetThread(RATES | {"oddspapi": 3000}) as vendors:
        collector = CollectorProcess(url, tmp_path, vendors.fleet, extra="\n[writer]\nqueue_units = 200\n",
                              metrics_port=port)
        collector.start()
        wait_for(lambda: len(stored(url)) == len(FEEDS), 60, "frames from all four feeds")
        with psycopg.connect(url) as blocker:  # a long report holding a lock: nothing can be inserted
            blocker.execute("LOCK TABLE price_ticks IN ACCESS EXCLUSIVE MODE")
            wait_for(lambda: gauge(port, "warehouse_writer_queue") == 200, 30, "the writer queue to fill")
            time.sleep(2)
            assert gauge(port, "warehouse_writer_queue") == 200  # full, and no further: the feeds wait
            assert psutil.Process(collector.process.pid).memory_info().rss < 300 * 2**20
        sent = vendors.stop_sending()
        wait_for(all_stored(url, sent), 90, f"every frame sent ({sent}) to be stored")
        assert collector.signal(signal.SIGTERM) == 0
    assert_once_each_and_derived_rows_match(url, vendors.fleet.toml())


def test_no_secret_reaches_a_table_a_log_or_the_metrics(server: EmbeddedPostgres, tmp_path: Path) -> None:
    """All four feeds, with drops and malformed frames, then every trace the run left is searched."""
    url, port = server.url(), free_port()
    with FleetThread(RATES, faults=True) as vendors:
        collector = CollectorProcess(url, tmp_path, vendors.fleet, metrics_port=port)
        collector.start()
        wait_for(lambda: query(url, "SELECT count(DISTINCT source) FROM collector_events"
                                    " WHERE event = 'reconnect_attempt'")[0][0] == len(FEEDS), 60,
                 "every feed to reconnect")
        wait_for(lambda: query(url, "SELECT count(DISTINCT source) FROM quarantine")[0][0] == len(FEEDS),
                 60,
                 "a quarantined frame from every feed")
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert collector.signal(signal.SIGTERM) == 0
    log = collector.log.read_text()
    assert "reconnecting" in log and 'warehouse_frames_total{source="mm"}' in metrics
    for secret in ENV.values():
        assert_secret_nowhere(url, secret, log + metrics)
    # the URLs were stored, masked
    assert query(url, "SELECT count(*) FROM collector_events WHERE detail->>'url' LIKE %s", "%apiKey=***%")[0][0] > 1


def test_a_spool_that_cannot_be_written_is_counted_and_the_feeds_go_on(server: EmbeddedPostgres,
                                                                      tmp_path: Path) -> None:
    url, port = server.url(), free_port()
    (tmp_path / "not-a-dir").write_text("a file where the spool folder should be: even root cannot write there")
    with FleetThread(RATES) as vendors:
        collector = CollectorProcess(url, tmp_path, vendors.fleet, metrics_port=port,
                                     extra=f'\n[writer]\nspool_dir = "{tmp_path / "not-a-dir" / "spool"}"\n')
        collector.start()
        wait_for(lambda: len(stored(url)) == len(FEEDS), 60, "frames from all four feeds")
        server.stop("immediate")
        wait_for(lambda: gauge(port, "warehouse_dropped_frames") > 50, 30, "frames counted as dropped")
        assert collector.process.poll() is None, "the collector keeps running"
        server.start()
        wait_for(lambda: query(url, "SELECT count(DISTINCT source) FROM collector_events"
                                    " WHERE event = 'dropped'")[0][0] == len(FEEDS), 60, "a dropped row per source")
        before = sum(stored(url).values())
        wait_for(lambda: sum(stored(url).values()) > before + 100, 30, "frames stored again")
        dropped = gauge(port, "warehouse_dropped_frames")
        assert collector.signal(signal.SIGTERM) == 0
    recorded = query(url, "SELECT sum((detail->>'frames')::int) FROM collector_events WHERE event = 'dropped'")[0][0]
    assert recorded == dropped
    assert "cannot spool" in collector.log.read_text()


def spool_then_restart(server: EmbeddedPostgres, tmp_path: Path, stop: signal.Signals) -> dict[str, str]:
    """All four feeds streaming; the database stopped until the collector has spooled 512 KiB; the collector
    stopped with `stop`; the database back, the collector started again until its spool is replayed and
    every feed connected, then stopped cleanly. The environment it ran with."""
    url = server.url()
    # A fifth of RATES: the replay must catch up with the feeds on a machine busy with other tests.
    with FleetThread({feed: rate // 5 for feed, rate in RATES.items()}) as vendors:
        collector = CollectorProcess(url, tmp_path, vendors.fleet)
        collector.start()
        try:
            wait_for(lambda: len(stored(url)) == len(FEEDS), 60, "frames from all four feeds")
            server.stop()
            spool = collector.spool
            wait_for(lambda: sum(f.stat().st_size for f in spool.glob("*.spool")) > 2**19, 120, "a spool of 512 KiB")
            assert collector.signal(stop) == (0 if stop != signal.SIGKILL else -signal.SIGKILL)
            server.start()
            collector.start()  # replays the spool, then collects
            wait_for(lambda: not list(spool.glob("*.spool")) and query(
                url, "SELECT count(DISTINCT connection_id) FROM collector_events WHERE event = 'connect'")[0][0]
                >= 2 * len(FEEDS), 180, "the spool replayed and every feed connected again")
            assert collector.signal(signal.SIGTERM) == 0
        finally:  # a failed wait leaves no collector running after the test
            if collector.process is not None and collector.process.poll() is None:
                collector.process.kill()
                collector.process.wait(timeout=60)
    return collector.env


def test_a_clean_stop_while_spooling_is_a_planned_gap_after_the_replay(server: EmbeddedPostgres,
                                                                       tmp_path: Path) -> None:
    """Issue 26 item 2: a collector that spooled against a stopped database and was stopped cleanly was
    later reported "killed or crashed": the next start looked for connections left open while the
    spool, which holds the shutdown's disconnects, was still being replayed."""
    url = server.url()
    env = spool_then_restart(server, tmp_path, signal.SIGINT)
    assert query(url, "SELECT count(*) FROM collector_events WHERE detail->>'reason' LIKE 'collector process%%'"
                      ) == [(0,)]
    status = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, "status", "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert status.returncode == 0, status.stderr
    for source in json.loads(status.stdout):
        assert source["gaps_24h"] == source["planned_gaps_24h"] == 2, source  # the two clean stops


def test_a_collector_killed_while_spooling_has_its_gap_start_at_its_last_spooled_frame(server: EmbeddedPostgres,
                                                                                       tmp_path: Path) -> None:
    """The spool of a killed collector holds its newest frames: the gap the next start records begins at
    the last of them (replayed), not at the last frame the database had before the outage."""
    url = server.url()
    spool_then_restart(server, tmp_path, signal.SIGKILL)
    for source in RATES:
        (killed, gap_at), = query(url, "SELECT connection_id, received_at FROM collector_events WHERE source = %s"
                                       " AND detail->>'reason' LIKE 'collector process ended%%'", source)
        last_frame = query(url, "SELECT max(received_at) FROM raw_messages WHERE connection_id = %s", killed)[0][0]
        assert gap_at == last_frame, source
