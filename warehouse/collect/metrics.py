"""Per-source counters, exposed in Prometheus format on /metrics when --metrics-port is given."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
_FRAMES = Counter("warehouse_frames", "Frames received", ["source"], registry=REGISTRY)
_ROWS = Counter("warehouse_rows", "Rows derived from frames", ["source"], registry=REGISTRY)
_BYTES = Counter("warehouse_received_bytes", "Bytes of frames received", ["source"], registry=REGISTRY)
_RECONNECTS = Counter("warehouse_reconnects", "Reconnect attempts", ["source"], registry=REGISTRY)
_QUARANTINED = Counter("warehouse_quarantined", "Frames quarantined", ["source"], registry=REGISTRY)
_LATENCY = Histogram(
    "warehouse_commit_latency_seconds", "Receive-to-commit latency of frames", ["source"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WRITER_QUEUE = Gauge("warehouse_writer_queue", "Frames waiting in the writer's memory queue", registry=REGISTRY)
SPOOL_BATCHES = Gauge("warehouse_spool_batches", "Batches waiting in the on-disk spool", registry=REGISTRY)
DROPPED = Gauge("warehouse_dropped_frames", "Frames that could be neither stored nor spooled (disk full)",
                registry=REGISTRY)


class FeedMetrics:
    """The children of every metric for one source, looked up once."""

    def __init__(self, source: str) -> None:
        self.frames = _FRAMES.labels(source)
        self.rows = _ROWS.labels(source)
        self.bytes = _BYTES.labels(source)
        self.reconnects = _RECONNECTS.labels(source)
        self.quarantined = _QUARANTINED.labels(source)


class CommitLatency:
    """Writer callback: observes receive→commit latency of every committed frame."""

    def __init__(self) -> None:
        self._children: dict[str, Any] = {}

    def __call__(self, units: Sequence[tuple[Any, Any]]) -> None:
        now = time.time()
        children = self._children
        for raw, _rows in units:
            if raw is None:
                continue
            child = children.get(raw.source)
            if child is None:
                child = children[raw.source] = _LATENCY.labels(raw.source)
            child.observe(now - raw.received_at.timestamp())


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
            elif sample.name == "warehouse_commit_latency_seconds_bucket":
                buckets.setdefault(source, []).append((float(sample.labels["le"]), sample.value))
    for source, pairs in buckets.items():
        pairs.sort()
        total = pairs[-1][1] if pairs else 0
        # The upper bound of the bucket holding the 99th percentile (histograms know no better).
        p99 = next((bound for bound, count in pairs if total and count >= 0.99 * total), float("nan"))
        result.setdefault(source, {})["commit_latency_p99_s"] = p99
    return result
