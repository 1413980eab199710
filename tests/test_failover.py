"""Two hosts, one feed, with real processes: `warehouse collect` processes (each with a data directory
of its own) on one database and the four simulated vendors, handing the feeds over as they stop, die
and lose the database. What the vendors sent and how many connections of a feed they saw at once are
counted by the simulators; the long loops (≥ 20 handovers, timings) are bench/failover.py's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, query
from tests.harness import CollectorProcess
from tests.replication import BINARIES as REPLICATION_BINARIES
from tests.replication import Replicated
from tests.tcpproxy import TcpProxy
from tests.test_faults import RATES, all_stored, assert_once_each_and_derived_rows_match, free_port, stored, wait_for
from warehouse.feeds.registry import FEEDS
from warehouse.simulate.fleet import FleetThread
from warehouse.store.embedded import EmbeddedPostgres

SOURCES = ("oddspapi", "saba", "ckex", "mm")


def collector(name: str, ttl: float = 10) -> str:
    return f'\n[collector]\nname = "{name}"\nclaim_ttl_s = {ttl}\n'


def holders(url: str) -> dict[str, str | None]:
    return dict(query(url, "SELECT feed, holder FROM collector_claims WHERE holder_process IS NOT NULL"))


def handovers(url: str, source: str) -> list[tuple[str | None, str, str]]:
    return [tuple(row) for row in query(url, "SELECT detail->>'from', detail->>'to', detail->>'why'"
                                             " FROM collector_events WHERE source = %s AND event = 'handover'"
                                             " ORDER BY (detail->>'epoch')::int", source)]


def saba_sent(vendors: FleetThread) -> set[str]:
    """The event ids Saba sent (some twice: what was on the wire when a collector died is sent again)."""
    return {i for ids in vendors.fleet.simulators["saba"].sent.values() for i in ids}


def saba_once_each(url: str, vendors: FleetThread) -> None:
    """Every event id Saba sent is stored, and none twice."""
    sent = saba_sent(vendors)
    ids = [row[0] for row in query(url, "SELECT event_id FROM raw_messages WHERE source = 'saba'")]
    assert len(ids) == len(set(ids)), "a Saba event stored twice"
    assert set(ids) == sent


def one_stream_at_a_time(vendors: FleetThread) -> None:
    most = {name: member.simulator.streams.most for name, member in vendors.fleet.members.items()}
    assert most == dict.fromkeys(SOURCES, 1), f"a vendor saw two connections of one feed at once: {most}"


def status(url: str, *ports: int) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """`warehouse status --json`: each source's claim, and the running collectors' counters."""
    argv = [sys.executable, "-m", "warehouse", "--database-url", url, "status", "--json",
            *(f"--metrics-port={port}" for port in ports)]
    rows = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout)
    return {r["source"]: r["claim"] for r in rows}, {r["source"]: r["collector"] for r in rows if "collector" in r}


def collecting_since(url: str, when: datetime) -> Callable[[], bool]:
    """Every feed has frames stored since `when`."""
    return lambda: all(query(url, "SELECT count(*) FROM raw_messages WHERE source = %s AND received_at > %s",
                             source, when)[0][0] for source in SOURCES)


def holder_and_standby(url: str, holder_url: str, tmp_path: Path, vendors: FleetThread,
                       ttl: float) -> tuple[CollectorProcess, CollectorProcess]:
    """`a` collecting every feed (on `holder_url`), then `b` standing by, once `a` has seen it."""
    a = CollectorProcess(holder_url, tmp_path / "a", vendors.fleet, extra=collector("a", ttl=ttl))
    a.start()
    wait_for(lambda: holders(url) == dict.fromkeys(SOURCES, "a") and len(stored(url)) == len(SOURCES), 60,
             "a collecting every feed")
    b = CollectorProcess(url, tmp_path / "b", vendors.fleet, extra=collector("b", ttl=ttl))
    b.start()
    wait_for(lambda: query(url, "SELECT bool_and(NOT solo) FROM collector_claims")[0][0], 60,
             "a to know its standby")
    return a, b


def kill_the_holder(url: str, processes: dict[str, CollectorProcess]) -> None:
    """SIGKILL the process holding the feeds, wait for the other to take them all and collect, and start
    the killed one again (it comes back as the standby)."""
    holder = holders(url)["saba"]
    standby = next(name for name in processes if name != holder)
    # once the holder has seen its standby, the standby may take what it leaves behind
    wait_for(lambda: query(url, "SELECT bool_and(NOT solo) FROM collector_claims")[0][0], 60,
             "the holder to know its standby")
    killed_at = datetime.now(UTC)
    assert processes[holder].signal(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: holders(url) == dict.fromkeys(SOURCES, standby), 60, f"{standby} to take over")
    wait_for(collecting_since(url, killed_at), 60, "every feed collected again")
    processes[holder].start()
    # (the killed one's row expired with its claims: two rows are the two live processes)
    wait_for(lambda: query(url, "SELECT count(*) FROM collector_processes WHERE expires_at > now()")[0][0] == 2,
             60, f"{holder} back as the standby")


def test_a_rolling_upgrade_hands_every_feed_over_with_only_the_clean_handover_as_a_gap(
        private_server: EmbeddedPostgres, tmp_path: Path) -> None:
    """The new version starts as a standby, the old one is stopped (SIGTERM): each feed is handed over
    at once, Saba resumes where the old process stopped, and nothing is stored twice."""
    url = private_server.url()
    with FleetThread(RATES) as vendors:
        old = CollectorProcess(url, tmp_path / "old", vendors.fleet, extra=collector("old"))
        old.start()
        wait_for(lambda: len(stored(url)) == len(FEEDS) and holders(url) == dict.fromkeys(SOURCES, "old"), 60,
                 "the old version collecting every feed")
        ports = {"old": free_port(), "new": free_port()}
        new = CollectorProcess(url, tmp_path / "new", vendors.fleet, extra=collector("new"), metrics_port=ports["new"])
        new.start()
        wait_for(lambda: query(url, "SELECT count(*) FROM collector_processes")[0][0] == 2, 60, "the standby")
        claims, live = status(url, ports["new"])
        assert {source: (c["holder"], c["standbys"]) for source, c in claims.items()} == dict.fromkeys(
            SOURCES, ("old", ["new"]))
        assert {source: values["claim_held"] for source, values in live.items()} == dict.fromkeys(SOURCES, 0)
        table = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, "status"],
                               capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert "collected by" in table.stdout and "standing by" in table.stdout
        stopped = datetime.now(UTC)
        assert old.signal(signal.SIGTERM) == 0
        wait_for(lambda: holders(url) == dict.fromkeys(SOURCES, "new"), 60, "the new version holding every feed")
        wait_for(collecting_since(url, stopped), 60, "the new version collecting every feed")
        claims, live = status(url, ports["new"])
        assert {source: (c["holder"], c["standbys"], c["epoch"]) for source, c in claims.items()} == dict.fromkeys(
            SOURCES, ("new", [], 2))
        assert {source: values["claim_held"] for source, values in live.items()} == dict.fromkeys(SOURCES, 1)
        vendors.stop_sending()
        wait_for(lambda: stored(url).get("saba") == len(saba_sent(vendors)), 60, "saba stored")
        assert new.signal(signal.SIGTERM) == 0
        one_stream_at_a_time(vendors)
    saba_once_each(url, vendors)
    assert query(url, "SELECT count(*) FROM (SELECT connection_id, seq FROM raw_messages"
                      " GROUP BY 1, 2 HAVING count(*) > 1) AS twice") == [(0,)]
    for source in SOURCES:
        assert handovers(url, source) == [(None, "old", "first"), ("old", "new", "released")]
        # the only gap: the old process's clean disconnect, then the new one's connect
        events = query(url, "SELECT event, detail->>'reason' FROM collector_events WHERE source = %s AND event IN"
                            " ('connect', 'disconnect') AND received_at > %s ORDER BY received_at", source,
                       stopped)
        assert events[:2] == [("disconnect", "shutdown"), ("connect", None)], source
    assert "standing by" in new.log.read_text()


def test_the_holder_killed_again_and_again_each_time_a_standby_takes_over_and_saba_loses_nothing(
        private_server: EmbeddedPostgres, tmp_path: Path) -> None:
    """SIGKILL, three times in a row, whichever process holds the feeds: the other takes them once the
    claims expire (claim_ttl_s = 4), Saba resumes from the last stored id, and the vendors never see
    two connections of a feed at once. The killed process comes back as the standby."""
    url = private_server.url()
    with FleetThread(RATES) as vendors:
        processes = {name: CollectorProcess(url, tmp_path / name, vendors.fleet, extra=collector(name, ttl=4))
                     for name in ("a", "b")}
        processes["a"].start()
        wait_for(lambda: holders(url) == dict.fromkeys(SOURCES, "a"), 60, "a holding every feed")
        processes["b"].start()
        for _ in range(3):
            kill_the_holder(url, processes)
        vendors.stop_sending()
        wait_for(lambda: stored(url).get("saba") == len(saba_sent(vendors)), 60, "saba stored")
        for process in processes.values():
            assert process.signal(signal.SIGTERM) == 0
        one_stream_at_a_time(vendors)
    saba_once_each(url, vendors)
    assert query(url, "SELECT count(*) FROM (SELECT connection_id, seq FROM raw_messages"
                      " GROUP BY 1, 2 HAVING count(*) > 1) AS twice") == [(0,)]
    for source in SOURCES:
        whys = [why for _, _, why in handovers(url, source)]
        assert whys[:4] == ["first", "expired", "expired", "expired"], source
        # each kill left the holder's connection open: the taker recorded the gap, dated at its last frame
        assert query(url, "SELECT count(*) FROM collector_events WHERE source = %s AND event = 'disconnect'"
                          " AND detail->>'reason' LIKE 'collector process ended%%'", source) == [(3,)]


def test_a_holder_cut_off_from_the_database_closes_its_feeds_before_the_standby_takes_them_and_its_late_spool_is_stored_once(  # noqa: E501
        private_server: EmbeddedPostgres, tmp_path: Path) -> None:
    """The holder's link to the database is cut (connections reset, new ones refused): it spools what it
    receives until its local deadline, closes every vendor connection, and the standby takes the feeds
    once the claims expire, resuming from the database (Saba from the last stored id: the vendor sends
    both some events). When the link is back, the late spool is stored — but no Saba event twice — with
    overlap rows per feed, and the old holder stands by."""
    url = private_server.url()
    with TcpProxy(private_server.socket_dir / ".s.PGSQL.5432") as proxy, FleetThread(RATES) as vendors:
        a, b = holder_and_standby(url, proxy.url("warehouse"), tmp_path, vendors, ttl=4)
        cut = datetime.now(UTC)
        proxy.cut()
        wait_for(lambda: holders(url) == dict.fromkeys(SOURCES, "b"), 60, "b to take over")
        wait_for(collecting_since(url, cut), 60, "b collecting every feed")
        proxy.restore()
        wait_for(lambda: {row[0] for row in query(url, "SELECT source FROM collector_events WHERE event = 'overlap'"
                                                       " AND (detail->>'late')::boolean")} == set(SOURCES), 60,
                 "a's late spool stored")
        wait_for(lambda: query(url, "SELECT bool_and(watch = '[]'::jsonb) FROM collector_claims")[0][0], 60,
                 "the watches to end")
        vendors.stop_sending()
        wait_for(lambda: stored(url).get("saba") == len(saba_sent(vendors)), 60, "saba stored")
        for process in (a, b):
            assert process.signal(signal.SIGTERM) == 0
        one_stream_at_a_time(vendors)
    saba_once_each(url, vendors)
    late = dict(query(url, "SELECT source, sum((detail->>'copies_left_out')::int) FROM collector_events"
                           " WHERE event = 'overlap' GROUP BY source"))
    assert late["saba"] > 0, "no Saba event reached both holders: the test tested nothing"
    # OddsPapi and CKEX give no identity: their late frames are stored, and marked. MM's stream has no
    # replay: no broadcast reaches both holders (what the new holder's REST resync fetched is state).
    assert late["oddspapi"] == late["ckex"] == late["mm"] == 0
    for source in SOURCES:
        assert [why for _, _, why in handovers(url, source)] == ["first", "expired"], source
        lost = query(url, "SELECT detail->>'reason' FROM collector_events WHERE source = %s AND event = 'disconnect'"
                          " AND received_at > %s AND detail->>'reason' LIKE 'claim lost%%'", source, cut)
        assert lost and "could not be renewed" in lost[0][0], source
    log = a.log.read_text()
    assert "claims: cannot reach the database" in log and "standing by" in log


@pytest.mark.skipif(not (REPLICATION_BINARIES / "pg_basebackup").exists() and not IN_CI,
                    reason=f"{REPLICATION_BINARIES} not found (apt-get install -y postgresql-15)")
def test_the_database_fails_over_to_its_standby_and_every_frame_is_stored_once_in_the_new_primary(
        tmp_path: Path) -> None:
    """Two PostgreSQL 15 clusters in synchronous streaming replication on 127.0.0.1; the collectors have
    both hosts in their URL (target_session_attrs=read-write). The primary is crash-stopped and the
    standby promoted while all four feeds stream: the collectors keep running, spool across the switch,
    follow the new primary (the holder renews its claims there before they can pass: nobody takes over)
    and every frame each vendor sent is stored exactly once in it."""
    with Replicated() as pg, FleetThread(RATES) as vendors:
        url = pg.url()
        a, b = holder_and_standby(url, url, tmp_path, vendors, ttl=20)
        pg.fail_over()
        switched = datetime.now(UTC)
        new_primary = pg.standby.url()
        wait_for(collecting_since(new_primary, switched), 90, "frames stored in the new primary")
        sent = vendors.stop_sending()
        wait_for(all_stored(new_primary, sent), 90, f"every frame sent ({sent}) stored in the new primary")
        claims, _ = status(url)  # the commands follow the new primary too (migrations' check included)
        assert {source: claim["holder"] for source, claim in claims.items()} == dict.fromkeys(SOURCES, "a")
        for process in (b, a):  # the standby first: nothing is handed over at the end
            assert process.signal(signal.SIGTERM) == 0
        one_stream_at_a_time(vendors)
        assert stored(new_primary) == sent and min(sent.values()) > 20
        assert_once_each_and_derived_rows_match(new_primary, vendors.fleet.toml())
        for source in SOURCES:
            assert [why for _, _, why in handovers(new_primary, source)] == ["first"], source  # never changed hands
    log = a.log.read_text()
    assert "database unavailable" in log and "spooling" in log
