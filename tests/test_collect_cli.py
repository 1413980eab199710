"""`warehouse simulate` and `warehouse collect` as an operator runs them: processes, signals, metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import query

KEY = "op-key-0d4c9e7f"
TOKEN = "saba-token-81f2aa"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def operator_setup(db_url: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """A config with an OddsPapi and a Saba feed on free local ports; the command line and environment."""
    op_port, saba_port = free_port(), free_port()
    config = tmp_path / "warehouse.toml"
    config.write_text(f"""
[writer]
spool_dir = "spool/collector"

[[feeds]]
name = "oddspapi"
kind = "oddspapi-ws"
url = "ws://127.0.0.1:{op_port}/v4/ws"
api_key_env = "OP_KEY"
backoff_initial_s = 0.2

[[feeds]]
name = "saba"
kind = "saba-sse"
url = "http://127.0.0.1:{saba_port}/sports/stream/v1/GetEvents"
token_env = "SABA_TOKEN"
backoff_initial_s = 0.2
""")
    env = {**os.environ, "OP_KEY": KEY, "SABA_TOKEN": TOKEN, "WAREHOUSE_DATABASE_URL": db_url}
    return [sys.executable, "-m", "warehouse", "--config", str(config)], env


def assert_stored_without_holes(db_url: str) -> None:
    """Every frame that got a sequence number (was received) is stored: no hole, nothing after the last."""
    for count, low, high in query(db_url, "SELECT count(*), min(seq), max(seq) FROM raw_messages"
                                          " GROUP BY connection_id"):
        assert (low, high) == (1, count)


def test_simulate_and_collect_then_sigint_stores_everything_received(db_url: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    command, env = operator_setup(db_url, tmp_path)
    simulators = subprocess.Popen([*command, "simulate"], env=env, stderr=subprocess.PIPE, text=True)
    collector = subprocess.Popen([*command, "-v", "collect", "--metrics-port", str(metrics_port)], env=env,
                                 stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: query(db_url, "SELECT count(DISTINCT source) FROM raw_messages")[0][0] == 2
                 and query(db_url, "SELECT count(*) FROM raw_messages")[0][0] >= 50, 60, "frames from both feeds")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'warehouse_frames_total{source="oddspapi"}' in metrics
        assert 'warehouse_commit_latency_seconds_count{source="saba"}' in metrics
        status = subprocess.run([*command, "status", "--json", "--metrics-port", str(metrics_port)], env=env,
                                capture_output=True, text=True, timeout=60)
        live = {row["source"]: row["collector"] for row in json.loads(status.stdout)}
        assert live["oddspapi"]["frames"] >= 1 and live["saba"]["rows"] >= 1
        assert 0 < live["saba"]["commit_latency_p99_s"] <= 60
        collector.send_signal(signal.SIGINT)
        _, collector_log = collector.communicate(timeout=60)
        assert collector.returncode == 0, collector_log[-2000:]
    finally:
        collector.kill()
        simulators.send_signal(signal.SIGTERM)
        _, simulator_log = simulators.communicate(timeout=30)
    assert simulators.returncode == 0, simulator_log[-2000:]

    reasons = query(db_url, "SELECT source, detail->>'reason' FROM collector_events WHERE event = 'disconnect'"
                            " ORDER BY source")
    assert reasons == [("oddspapi", "shutdown"), ("saba", "shutdown")]
    assert_stored_without_holes(db_url)
    assert not list((tmp_path / "spool" / "collector").glob("*.spool")), "spool must be empty after a clean stop"
    for secret in (KEY, TOKEN):
        assert secret not in collector_log and secret not in simulator_log
    assert "collecting 2 feeds" in collector_log


def test_one_collector_process_per_feed(db_url: str, tmp_path: Path) -> None:
    """`collect --feed NAME`: busy feeds in processes of their own, each with its own spool."""
    command, env = operator_setup(db_url, tmp_path)
    unknown = subprocess.run([*command, "collect", "--feed", "nope"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 2
    assert "no feed is named 'nope'; its feeds are: oddspapi, saba" in unknown.stderr
    simulators = subprocess.Popen([*command, "simulate"], env=env, stderr=subprocess.PIPE, text=True)
    ports = {"oddspapi": free_port(), "saba": free_port()}
    collectors = {name: subprocess.Popen([*command, "collect", "--feed", name, "--metrics-port", str(port)],
                                         env=env, stderr=subprocess.PIPE, text=True) for name, port in ports.items()}
    logs = {}
    try:
        wait_for(lambda: query(db_url, "SELECT count(*) FILTER (WHERE source = 'oddspapi') >= 20 AND"
                                       " count(*) FILTER (WHERE source = 'saba') >= 2 FROM raw_messages")[0][0],
                 60, "frames from both collectors")
        status = subprocess.run([*command, "status", "--json", *(f"--metrics-port={p}" for p in ports.values())],
                                env=env, capture_output=True, text=True, timeout=60)
        live = {row["source"]: row["collector"] for row in json.loads(status.stdout)}
        assert live["oddspapi"]["frames"] >= 20 and live["saba"]["frames"] >= 2  # each from its own process
        # A third collector of the same feeds (a spool of its own) stands by for both: one holder per feed.
        holders = query(db_url, "SELECT feed, holder, epoch FROM collector_claims ORDER BY feed")
        third = subprocess.Popen([*command, "collect"], env=env, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: query(db_url, "SELECT count(*) FROM collector_processes")[0][0] == 3, 60,
                     "the third collector to register")
            time.sleep(1)  # a few of its polls (every second): it must take nothing
        finally:
            third.send_signal(signal.SIGINT)
            _, third_log = third.communicate(timeout=60)
        assert third.returncode == 0, third_log[-2000:]
        assert query(db_url, "SELECT feed, holder, epoch FROM collector_claims ORDER BY feed") == holders
        for name in ports:
            assert f"feed {name} is collected by " in third_log and "; standing by" in third_log
        for name, collector in collectors.items():
            collector.send_signal(signal.SIGINT)
            _, logs[name] = collector.communicate(timeout=60)
            assert collector.returncode == 0, logs[name][-2000:]
    finally:
        for collector in collectors.values():
            collector.kill()
        simulators.send_signal(signal.SIGTERM)
        simulators.communicate(timeout=30)
    for name, log in logs.items():
        assert f"collecting 1 feed ({name}) through the spool {tmp_path / 'spool' / f'collector-{name}'};" in log
    assert query(db_url, "SELECT source, count(*) FROM collector_events WHERE event = 'disconnect'"
                         " AND detail->>'reason' = 'shutdown' GROUP BY source ORDER BY source") == [
        ("oddspapi", 1), ("saba", 1)]
    assert_stored_without_holes(db_url)
    spools = tmp_path / "spool"
    assert sorted(p.name for p in spools.iterdir() if p.is_dir()) == ["collector", "collector-oddspapi",
                                                                      "collector-saba"]  # the third's too
    assert not list(spools.glob("*/*.spool")), "spools must be empty after a clean stop"


def test_a_collector_of_some_feeds_spools_beside_the_default_spool(tmp_path: Path, monkeypatch) -> None:
    from warehouse.collect.service import writer_identity
    from warehouse.config import WriterSettings
    from warehouse.store.writer import Writer

    assert writer_identity([], WriterSettings()) == ("collector", WriterSettings())
    name, settings = writer_identity(["saba", "odds/papi", "saba"], WriterSettings())
    assert (name, settings.spool_dir) == ("collector-odds_papi+saba", None)
    monkeypatch.setenv("WAREHOUSE_DATA_DIR", str(tmp_path))
    spool = Writer("postgresql://u@h/odds", settings, name=name).spool_dir
    assert spool == tmp_path.resolve() / "spool" / "odds" / name  # per database
    _, configured = writer_identity(["mm"], WriterSettings(spool_dir=tmp_path / "spool" / "main"))
    assert configured.spool_dir == tmp_path / "spool" / "main-mm"


def test_status_and_the_start_line_say_what_they_know_and_no_more(db_url: str, tmp_path: Path) -> None:
    """Issue 26 item 16: no `-0.0s ago` when a frame's time is ahead of the database's clock, no
    `≤ nan ms` before anything was committed, and the collector's first line names its database."""
    command, env = operator_setup(db_url, tmp_path)
    query(db_url, "INSERT INTO raw_messages (received_at, source, connection_id, seq, kind)"
                  " VALUES (now() + INTERVAL '1 hour', 'ahead', gen_random_uuid(), 1, 'k') RETURNING 1")
    metrics_port = free_port()
    unreachable = f"postgresql://owh:pass-word-9f3@127.0.0.1:{free_port()}/odds"
    collector = subprocess.Popen([*command, "--database-url", unreachable, "collect", "--metrics-port",
                                  str(metrics_port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _scrapes(metrics_port), 60, "the collector's /metrics")
        status = subprocess.run([*command, "status", "--metrics-port", str(metrics_port)], env=env,
                                capture_output=True, text=True, timeout=60)
        as_json = subprocess.run([*command, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        collector.send_signal(signal.SIGINT)
        _, log = collector.communicate(timeout=60)
    finally:
        collector.kill()
    assert status.returncode == 0, status.stderr
    assert "-0.0s" not in status.stdout and "0.0s ago" in status.stdout
    assert [row["last_frame_age_s"] for row in json.loads(as_json.stdout)] == [0.0]
    assert "nan" not in status.stdout and "never reached" in status.stdout
    assert f"; writing to postgresql://owh:***@127.0.0.1:{unreachable.rsplit(':', 1)[1]};" in log
    assert "pass-word-9f3" not in log


def _scrapes(port: int) -> bool:
    try:
        return b"warehouse_frames_total" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return False
