"""Per-source counters, exposed in Prometheus format on /metrics when --metrics-port is given."""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry()
WRITER_QUEUE = Gauge("warehouse_writer_queue", "Frames waiting in the writer's memory queue", registry=REGISTRY)
SPOOL_BATCHES = Gauge("warehouse_spool_batches", "Batches waiting in the on-disk spool", registry=REGISTRY)
DROPPED = Gauge("warehouse_dropped_frames", "Frames that could be neither stored nor spooled (disk full)",
                registry=REGISTRY)
DATABASE_UP = Gauge("warehouse_database_up", "1 while the writer is connected to the database", registry=REGISTRY)
DATABASE_REACHED = Gauge("warehouse_database_reached", "1 once the database was reachable since the collector started"
                         " (0: check the URL)", registry=REGISTRY)
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
        for raw, _rows in units:
            if raw is None:
                continue
            if metrics is None or metrics.source != raw.source:
                metrics = for_source(raw.source)
            latency = now - raw.received_at.timestamp()
            metrics.latency_buckets[bisect_left(LATENCY_BUCKETS, latency)] += 1
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


REGISTRY.register(_FeedCollector())


def serve(port: int) -> None:
    """Expose /metrics on 127.0.0.1:`port` (put a proxy in front to publish it further)."""
    start_http_server(port, addr="127.0.0.1", registry=REGISTRY)


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
            elif sample.name == "warehouse_resync_running":
                result.setdefault(source, {})["resync_running"] = sample.value
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
