"""Per-source counters and gauges, exposed in Prometheus format on /metrics when --metrics-bind (or
--metrics-port) is given; with the newest run of each maintenance job read from job_runs.

What each metric means, and the alert rules and dashboard built on them: docs/monitoring.md.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry()
WRITER_QUEUE = Gauge("warehouse_writer_queue", "Frames waiting in the writer's memory queue", registry=REGISTRY)
WRITER_CONNECTIONS = Gauge("warehouse_writer_connections", "The writer's open database connections (2: it fell"
                           " behind one at least once since it last connected)", registry=REGISTRY)
SPOOL_BATCHES = Gauge("warehouse_spool_batches", "Batches waiting in the on-disk spool", registry=REGISTRY)
SPOOL_BYTES = Gauge("warehouse_spool_bytes", "Bytes of the on-disk spool's files (0 when nothing waits)",
                    registry=REGISTRY)
DROPPED = Gauge("warehouse_dropped_frames", "Frames that could be neither stored nor spooled (disk full)",
                registry=REGISTRY)
DATABASE_UP = Gauge("warehouse_database_up", "1 while the writer is connected to the database", registry=REGISTRY)
DATABASE_REACHED = Gauge("warehouse_database_reached", "1 once the database was reachable since the collector started"
                         " (0: check the URL)", registry=REGISTRY)
HOLDER = Gauge("warehouse_claim_held", "1 while this process holds the source's claim (collects it), 0 while it"
               " stands by", ["source"], registry=REGISTRY)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)  # seconds


@dataclass(eq=False)
class FeedMetrics:
    """One source's counters. Plain integers, because they change with every frame and a
    Prometheus client counter takes a lock per increment (with the latency histogram, ~5 µs of
    a frame's ~70); /metrics reads them when it is scraped. Get them with `for_source`."""

    source: str
    frames: int = 0
    rows: int = 0
    bytes: int = 0
    reconnect_attempts: int = 0
    quarantined: int = 0
    resyncs: int = 0  # resync passes finished (every call done, or given up for a retry)
    resync_calls: int = 0  # REST calls answered (any status)
    resync_refused: int = 0  # ... of which 429 (rate limit, cooldown) and 401/403 (key)
    resync_failed: int = 0  # calls that failed (5xx, timeout, no connection, an answer we cannot use)
    resync_rows: int = 0  # rows derived from REST answers
    resync_running: bool = False
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))  # last: > 60 s
    latency_sum: float = 0.0
    connected: bool = False  # a connection to the vendor is open and streaming
    last_frame_at: datetime | None = None  # received_at of the newest frame
    last_commit_at: float | None = None  # time.time() when a frame of the source was last committed
    watched_since: float = field(default_factory=time.time)  # the ages count from here before the first frame


_FEEDS: dict[str, FeedMetrics] = {}


def for_source(source: str) -> FeedMetrics:
    """The one FeedMetrics of `source` in this process (created on first use)."""
    metrics = _FEEDS.get(source)
    if metrics is None:
        metrics = _FEEDS[source] = FeedMetrics(source)
    return metrics


class CommitLatency:
    """Writer callback: the receive→commit latency of every committed frame, into its histogram."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def __call__(self, units: Sequence[tuple[Any, Any]]) -> None:
        now = self.clock()
        metrics: FeedMetrics | None = None
        received_at, bucket, latency = None, 0, 0.0
        for raw, _rows in units:
            if raw is None:
                continue
            if metrics is None or metrics.source != raw.source:
                metrics = for_source(raw.source)
                metrics.last_commit_at = now
            if raw.received_at is not received_at:  # frames received together share theirs
                received_at = raw.received_at
                latency = now - received_at.timestamp()
                bucket = bisect_left(LATENCY_BUCKETS, latency)
            metrics.latency_buckets[bucket] += 1
            metrics.latency_sum += latency


class _FeedCollector:
    """Exposes every FeedMetrics in Prometheus format, under the names a client library would use."""

    _COUNTERS = (  # FeedMetrics attribute, metric name (a `_total` sample), help
        ("frames", "warehouse_frames", "Frames received"),
        ("rows", "warehouse_rows", "Rows derived from frames"),
        ("bytes", "warehouse_received_bytes", "Bytes of frames received"),
        ("reconnect_attempts", "warehouse_reconnect_attempts", "Reconnect attempts"),
        ("quarantined", "warehouse_quarantined", "Frames quarantined"),
        ("resyncs", "warehouse_resyncs", "Resyncs (REST calls healing a gap) finished"),
        ("resync_calls", "warehouse_resync_calls", "REST calls of resyncs answered"),
        ("resync_refused", "warehouse_resync_refused", "REST calls of resyncs refused (429, 401, 403)"),
        ("resync_failed", "warehouse_resync_failed", "REST calls of resyncs failed (5xx, timeout, unusable)"),
        ("resync_rows", "warehouse_resync_rows", "Rows derived from REST answers"),
    )

    _BOUNDS = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]  # the `le` labels, as the client library has them

    def collect(self) -> Iterator[Metric]:
        feeds = list(_FEEDS.values())
        for attribute, name, documentation in self._COUNTERS:
            family = CounterMetricFamily(name, documentation, labels=["source"])
            for feed in feeds:
                family.add_metric([feed.source], getattr(feed, attribute))
            yield family
        histogram = HistogramMetricFamily("warehouse_commit_latency_seconds", "Receive-to-commit latency of frames",
                                          labels=["source"])
        for feed in feeds:
            cumulative = itertools.accumulate(feed.latency_buckets)
            histogram.add_metric([feed.source], list(zip(self._BOUNDS, cumulative, strict=True)), feed.latency_sum)
        yield histogram
        running = GaugeMetricFamily("warehouse_resync_running", "1 while a resync of the source runs",
                                    labels=["source"])
        for feed in feeds:
            running.add_metric([feed.source], int(feed.resync_running))
        yield running
        connected = GaugeMetricFamily("warehouse_connected", "1 while a connection to the vendor is open",
                                      labels=["source"])
        frame_age = GaugeMetricFamily("warehouse_last_frame_age_seconds", "Seconds since the newest frame was"
                                      " received (before the first: since the collector started)", labels=["source"])
        commit_age = GaugeMetricFamily("warehouse_last_commit_age_seconds", "Seconds since a frame of the source was"
                                       " last committed (before the first: since the collector started)",
                                       labels=["source"])
        now = time.time()
        for feed in feeds:
            connected.add_metric([feed.source], int(feed.connected))
            last_frame = feed.last_frame_at.timestamp() if feed.last_frame_at else feed.watched_since
            frame_age.add_metric([feed.source], max(0.0, now - last_frame))
            commit_age.add_metric([feed.source], max(0.0, now - (feed.last_commit_at or feed.watched_since)))
        yield from (connected, frame_age, commit_age)
        spooled = GaugeMetricFamily("warehouse_spool_frames", "Frames waiting in the on-disk spool", labels=["source"])
        waiting = spool_frames()
        for source in sorted({feed.source for feed in feeds} | set(waiting)):  # 0 too: a series to alert on
            spooled.add_metric([source], waiting.get(source, 0))
        yield spooled


spool_frames: Callable[[], dict[str, int]] = dict  # per source; the collector points it at its writer's spool


REGISTRY.register(_FeedCollector())


class _JobsCollector:
    """The newest run of each maintenance job (export, retain, verify-lake), read from job_runs: those
    jobs are other processes, often on another host, and the database is what every host shares.
    Read at most every READ_EVERY_S seconds; while the database cannot be read, the last values read."""

    READ_EVERY_S = 30.0

    def __init__(self) -> None:
        self.url: str | None = None
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._states: dict[str, Any] = {}

    def _states_now(self) -> dict[str, Any]:
        from warehouse.lifecycle.jobs import states  # the jobs' own module reads its table

        with self._lock:
            if self.url is not None and time.monotonic() - self._read_at >= self.READ_EVERY_S:
                self._read_at = time.monotonic()
                import psycopg

                try:
                    with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
                        self._states = states(conn)
                except psycopg.Error as exc:
                    logging.getLogger("warehouse.collect").info("metrics: cannot read job_runs (%s)",
                                                                type(exc).__name__)
            return self._states

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily("warehouse_job_last_success_timestamp_seconds", "When the job last succeeded"
                                    " (Unix time; 0: never)", labels=["command"])
        finished = GaugeMetricFamily("warehouse_job_last_run_timestamp_seconds", "When the job's newest run ended"
                                     " (Unix time; 0: never)", labels=["command"])
        result = GaugeMetricFamily("warehouse_job_last_run_ok", "1 if the job's newest run succeeded, 0 if it"
                                   " failed (no sample: never ran)", labels=["command"])
        for job, state in sorted(self._states_now().items()):
            success.add_metric([job], state.last_success_at.timestamp() if state.last_success_at else 0)
            finished.add_metric([job], state.last_run_at.timestamp() if state.last_run_at else 0)
            if state.last_ok is not None:
                result.add_metric([job], int(state.last_ok))
        yield from (success, finished, result)


JOBS = _JobsCollector()
REGISTRY.register(JOBS)


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`0.0.0.0:9101`, `[::]:9101`, `127.0.0.1:9101`) → (host, port), or one line saying why not."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-bind: expected HOST:PORT (127.0.0.1:9101, 0.0.0.0:9101, [::]:9101), got {text!r}")
    return host, int(port)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on `host`:`port` (127.0.0.1 unless the operator binds it wider), or say which is busy."""
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise ValueError(f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; choose another"
                         " --metrics-bind (or --metrics-port), or stop what listens there") from None


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> dict[str, dict[str, float]]:
    """A running collector's counters per source (what `warehouse status --metrics-port` shows)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout).read().decode()
    result: dict[str, dict[str, float]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            source = sample.labels.get("source")
            if source is None:
                continue
            if sample.name.endswith("_total"):
                name = sample.name.removeprefix("warehouse_").removesuffix("_total")
                result.setdefault(source, {})[name] = sample.value
            elif sample.name in ("warehouse_resync_running", "warehouse_claim_held"):
                result.setdefault(source, {})[sample.name.removeprefix("warehouse_")] = sample.value
            elif sample.name == "warehouse_commit_latency_seconds_bucket":
                buckets.setdefault(source, []).append((float(sample.labels["le"]), sample.value))
    gauges = {sample.name: sample.value for family in text_string_to_metric_families(text)
              for sample in family.samples if sample.name in ("warehouse_database_up", "warehouse_database_reached")}
    for values in result.values():  # one writer per collector process: its database state goes with each feed
        values.update({name.removeprefix("warehouse_"): value for name, value in gauges.items()})
    for source, pairs in buckets.items():
        pairs.sort()
        total = pairs[-1][1] if pairs else 0
        if total:  # none yet (the database never reached, say): no percentile, rather than NaN
            # The upper bound of the bucket holding the 99th percentile (histograms know no better).
            p99 = next(bound for bound, count in pairs if count >= 0.99 * total)
            result.setdefault(source, {})["commit_latency_p99_s"] = p99
    return result
