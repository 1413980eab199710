"""The collector's counters and latency histogram, as /metrics exposes them and `status` reads them."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from warehouse.collect import metrics
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
