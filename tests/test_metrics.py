"""The collector's counters and latency histogram, as /metrics exposes them and `status` reads them."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from tests.conftest import query
from warehouse.collect import metrics
from warehouse.lifecycle import jobs
from warehouse.lifecycle.lock import Busy
from warehouse.records import CollectorEvent, RawMessage


def test_counters_and_latency_histogram_are_exposed_exactly() -> None:
    feed = metrics.for_source("metrics-test")
    assert metrics.for_source("metrics-test") is feed  # one per source: every runner adds to it
    feed.frames += 100
    feed.rows += 200
    feed.bytes += 52_000
    feed.reconnect_attempts += 2
    feed.quarantined += 1
    feed.resyncs += 3
    feed.resync_calls += 40
    feed.resync_refused += 2
    feed.resync_failed += 1
    feed.resync_rows += 700
    feed.resync_running = True

    now = datetime.now(UTC)
    connection = uuid4()
    units = [(RawMessage(now - timedelta(seconds=0.02), "metrics-test", connection, n, "price", b"{}"), [])
             for n in range(99)]
    units.append((RawMessage(now - timedelta(seconds=0.3), "metrics-test", connection, 99, "price", b"{}"), []))
    units.append((None, [CollectorEvent(now, "metrics-test", None, "connect", None)]))  # no frame: no latency
    metrics.CommitLatency(clock=now.timestamp)(units)  # committed at `now`

    def sample(name: str, **labels: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, {"source": "metrics-test", **labels})

    assert sample("warehouse_frames_total") == 100
    assert sample("warehouse_rows_total") == 200
    assert sample("warehouse_received_bytes_total") == 52_000
    assert sample("warehouse_reconnect_attempts_total") == 2
    assert sample("warehouse_quarantined_total") == 1
    assert (sample("warehouse_resyncs_total"), sample("warehouse_resync_calls_total"),
            sample("warehouse_resync_refused_total"), sample("warehouse_resync_failed_total"),
            sample("warehouse_resync_rows_total"), sample("warehouse_resync_running")) == (3, 40, 2, 1, 700, 1)
    assert sample("warehouse_commit_latency_seconds_count") == 100
    # Epoch seconds as floats are good to ~1e-7 each: exact enough to tell 2.28 from anything wrong.
    assert sample("warehouse_commit_latency_seconds_sum") == pytest.approx(99 * 0.02 + 0.3, abs=1e-3)
    assert sample("warehouse_commit_latency_seconds_bucket", le="0.01") == 0
    assert sample("warehouse_commit_latency_seconds_bucket", le="0.025") == 99
    assert sample("warehouse_commit_latency_seconds_bucket", le="0.25") == 99
    assert sample("warehouse_commit_latency_seconds_bucket", le="0.5") == 100
    assert sample("warehouse_commit_latency_seconds_bucket", le="+Inf") == 100

    # What `warehouse status --metrics-port` reads over HTTP.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics.serve(port)
    scraped = metrics.scrape(port)["metrics-test"]
    assert scraped["frames"] == 100 and scraped["rows"] == 200 and scraped["quarantined"] == 1
    assert (scraped["resyncs"], scraped["resync_rows"], scraped["resync_running"]) == (3, 700, 1)
    assert scraped["commit_latency_p99_s"] == 0.025  # the bucket holding the 99th of 100


def test_per_source_gauges_connected_ages_and_spool() -> None:
    feed = metrics.for_source("gauges-test")
    feed.watched_since = time.time() - 100  # the collector started watching it 100 s ago, no frame since

    def sample(name: str, source: str = "gauges-test") -> float | None:
        return metrics.REGISTRY.get_sample_value(name, {"source": source})

    assert sample("warehouse_connected") == 0
    assert 100 <= sample("warehouse_last_frame_age_seconds") < 200  # type: ignore[operator]
    assert 100 <= sample("warehouse_last_commit_age_seconds") < 200  # type: ignore[operator]
    feed.connected = True
    now = datetime.now(UTC)
    feed.last_frame_at = now - timedelta(seconds=5)
    metrics.CommitLatency(clock=lambda: now.timestamp() - 2)([(RawMessage(
        now - timedelta(seconds=3), "gauges-test", uuid4(), 1, "price", b"{}"), [])])
    assert sample("warehouse_connected") == 1
    assert 5 <= sample("warehouse_last_frame_age_seconds") < 100  # type: ignore[operator]
    assert 2 <= sample("warehouse_last_commit_age_seconds") < 100  # type: ignore[operator]
    assert sample("warehouse_spool_frames") == 0  # a series for every source, so a rule can watch it
    metrics.spool_frames = lambda: {"gauges-test": 7, "gone-feed": 3}
    try:
        assert (sample("warehouse_spool_frames"), sample("warehouse_spool_frames", "gone-feed")) == (7, 3)
    finally:
        metrics.spool_frames = dict


def test_job_metrics_are_the_newest_runs_in_job_runs(db_url: str) -> None:
    with jobs.run("export") as run:
        run.url = db_url
        run.done("exported 11 table-days")
    with pytest.raises(ValueError), jobs.run("retain") as run:
        run.url = db_url
        raise ValueError("no retention configured")
    with pytest.raises(Busy), jobs.run("export") as run:  # another host's export runs: this one did not
        run.url = db_url
        raise Busy("`warehouse export` on host-b (pid 42) is running on this warehouse")
    recorded = dict(query(db_url, "SELECT job, finished_at FROM job_runs"))
    assert query(db_url, "SELECT job, ok, detail FROM job_runs ORDER BY id") == [
        ("export", True, "exported 11 table-days"), ("retain", False, "ValueError: no retention configured")]
    reader = metrics._JobsCollector()
    reader.url = db_url
    samples = {(s.name, s.labels["command"]): s.value for family in reader.collect() for s in family.samples}
    assert samples == {
        ("warehouse_job_last_success_timestamp_seconds", "export"): recorded["export"].timestamp(),
        ("warehouse_job_last_success_timestamp_seconds", "retain"): 0,  # never
        ("warehouse_job_last_success_timestamp_seconds", "verify-lake"): 0,
        ("warehouse_job_last_run_timestamp_seconds", "export"): recorded["export"].timestamp(),
        ("warehouse_job_last_run_timestamp_seconds", "retain"): recorded["retain"].timestamp(),
        ("warehouse_job_last_run_timestamp_seconds", "verify-lake"): 0,
        ("warehouse_job_last_run_ok", "export"): 1,
        ("warehouse_job_last_run_ok", "retain"): 0,  # verify-lake never ran: no sample
    }


def test_metrics_bind_takes_host_and_port_and_a_busy_port_is_named() -> None:
    assert metrics.parse_bind("0.0.0.0:9101") == ("0.0.0.0", 9101)
    assert metrics.parse_bind("[::]:9101") == ("::", 9101)
    for wrong in ("9101", ":9101", "host:", "host:http", "host:70000"):
        with pytest.raises(ValueError, match=r"--metrics-bind: expected HOST:PORT \(127.0.0.1:9101"):
            metrics.parse_bind(wrong)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot serve /metrics on 127.0.0.1:{port}: Address already in use;"):
            metrics.serve(port)
