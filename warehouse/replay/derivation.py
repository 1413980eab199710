"""Stored frames → today's adapters → records, through the one path live frames take (feeds/derive.py).

Each connection gets a fresh adapter, made with the kind and options its connect event recorded (or
the config's entry of that name); a range starting mid-connection first warms the adapter up on the
connection's earlier frames (docs/replay.md, "What replay needs to know").
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast
from uuid import UUID

import pyarrow as pa

from warehouse.config import ConfigError, FeedConfig
from warehouse.feeds import registry
from warehouse.feeds.contract import Adapter, Feed, RestCall, is_rest_kind
from warehouse.feeds.derive import CONTROL_EVENTS, Derived, derive
from warehouse.options import parse
from warehouse.records import EVENT_CONNECT, CollectorEvent, RawMessage, Record, event_type_of, with_event_type
from warehouse.replay.stored import Stored

_tuple_new = tuple.__new__
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Frames stored with their text passed the size limit when they arrived; the limit is not re-applied.
NO_LIMIT = sys.maxsize
# Adapters kept at once: a source's connections follow one another, so only the last few get frames.
OPEN_ADAPTERS = 64
# The collector_events a frame derives (its control signals). Rows of these names with a
# connection but no raw_id were written before they were linked to their frame.
FRAME_EVENTS: tuple[str, ...] = tuple(sorted(set(CONTROL_EVENTS.values())))


class Replayed(NamedTuple):
    """One stored frame, replayed."""

    raw_id: int  # its id where it is stored
    stored_kind: str  # raw_messages.kind as stored
    raw: RawMessage  # its raw row as replay makes it (kind: what today's adapter says)
    records: list[Record]  # what today's adapter derives from it (control events and quarantine rows too)
    derived: bool  # False: its text is not stored (it was not JSON, or too large): nothing to derive again


@dataclass(frozen=True)
class Connect:
    """What a connect event recorded for replay."""

    received_at: datetime
    connection_id: str
    feed_kind: str | None
    adapter_version: str | None
    options: dict[str, Any] | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, received_at: datetime, connection_id: str, detail: Any) -> Connect:
        detail = detail if isinstance(detail, dict) else {}
        options = detail.get("options")
        return cls(received_at, connection_id, detail.get("feed_kind"), detail.get("adapter_version"),
                   options if isinstance(options, dict) else None, detail)

    def event(self, source: str) -> CollectorEvent:
        """The connect event itself (to copy it)."""
        return CollectorEvent(self.received_at, source, UUID(self.connection_id), EVENT_CONNECT, self.detail)


@dataclass
class Plan:
    """How to derive each connection of one source: its feed kind and options."""

    source: str
    connects: list[Connect]
    entry: FeedConfig | None = None  # the config's [[feeds]] entry named like the source
    # per (feed kind, the version its connect event recorded or None): connections replayed
    versions: Counter[tuple[str, str | None]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._by_id = {c.connection_id: c for c in self.connects}
        if self.entry is not None:
            recorded = {c.feed_kind for c in self.connects if c.feed_kind}
            if recorded and self.entry.kind not in recorded:
                raise ConfigError(f"source {self.source!r} was collected as {', '.join(sorted(recorded))}, but the"
                                  f" config's [[feeds]] {self.entry.name} is {self.entry.kind}; give a config that"
                                  " describes it as it was collected, or none")

    def connect_of(self, connection_id: str, first_at: datetime) -> Connect | None:
        """The connection's own connect event, else the source's last one before it (a connection
        without one, such as a REST resync's, was made with the source's settings of the time)."""
        own = self._by_id.get(connection_id)
        if own is not None:
            return own
        before = [c for c in self.connects if c.received_at <= first_at]
        return before[-1] if before else None

    def open(self, connection_id: str, first_at: datetime) -> tuple[Feed[Any], Adapter, Connect | None]:
        """A fresh adapter for the connection (and its connect event), counted in `versions`."""
        feed, options, connect = self.resolve(connection_id, first_at)
        self.versions[(feed.kind, connect.adapter_version if connect and connect.feed_kind == feed.kind else None)] += 1
        return feed, feed.adapter(self.source, options), connect

    def resolve(self, connection_id: str, first_at: datetime) -> tuple[Feed[Any], Any, Connect | None]:
        """The connection's feed kind and options (and its connect event): ConfigError if unknown."""
        connect = self.connect_of(connection_id, first_at)
        kind = (connect.feed_kind if connect else None) or (self.entry.kind if self.entry else None)
        if kind is None:
            raise ConfigError(f"source {self.source!r}: the feed kind of connection {connection_id} is unknown (its"
                              " connect event predates replay's records, or is missing); give --config with a"
                              f" [[feeds]] entry named {self.source!r} as it was collected")
        feed = registry.FEEDS.get(kind)
        if feed is None:
            raise ConfigError(f"source {self.source!r} was collected as feed kind {kind!r}, which this version does"
                              f" not have (it has {', '.join(registry.FEEDS)})")
        return feed, self._options(feed, connection_id, connect), connect

    def _options(self, feed: Feed[Any], connection_id: str, connect: Connect | None) -> Any:
        entry = self.entry if self.entry is not None and self.entry.kind == feed.kind else None
        if connect is not None and connect.options is not None:
            try:
                return parse(feed.options, connect.options, f"the connect event of connection {connection_id}",
                             f"source {self.source!r}")
            except ConfigError as exc:
                if entry is None:
                    raise ConfigError(f"{exc}; give --config with a [[feeds]] entry named {self.source!r}") from None
        if entry is not None:
            return entry.options
        raise ConfigError(f"source {self.source!r}: the options of connection {connection_id} are unknown (collected"
                          " before connect events recorded them); give --config with a [[feeds]] entry named"
                          f" {self.source!r} as it was collected")


def load_plan(stored: Stored, source: str, end: datetime, entry: FeedConfig | None) -> Plan:
    return Plan(source, [Connect.of(*row) for row in stored.connects(source, end)], entry)


class Deriver:
    """Runs one source's stored frames through today's adapters, one adapter per connection."""

    def __init__(self, stored: Stored, plan: Plan) -> None:
        self.stored = stored
        self.plan = plan
        self.source = plan.source
        self.warmed = 0  # frames before the range derived only to bring an adapter up to date
        self.opened: list[tuple[str, Connect | None]] = []  # connections in the order first met, with their connect
        self._open: OrderedDict[str, tuple[Feed[Any], Adapter, UUID]] = OrderedDict()

    def run(self, batches: Iterator[pa.RecordBatch]) -> Iterator[Replayed]:
        """Every frame of `batches` (FRAME_SCHEMA), replayed, in order."""
        try:
            yield from self._run(batches)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a reader thread, a COPY: stopped now, not when garbage-collected

    def _run(self, batches: Iterator[pa.RecordBatch]) -> Iterator[Replayed]:
        source = self.source
        current: str | None = None
        kind, adapter, connection = "", cast(Adapter, None), UUID(int=0)  # set at the first frame
        # stored kind → (a REST answer?, the event type from the wire): a source has few kinds
        classified: dict[str, tuple[bool, str | None]] = {}
        for batch in batches:
            for raw_id, micros, connection_id, seq, event_id, stored_kind, payload in zip(*_columns(batch),
                                                                                          strict=True):
                at = EPOCH + timedelta(microseconds=micros)
                if connection_id != current:
                    current = connection_id
                    feed, adapter, connection = self._connection(current, seq, at)
                    kind = feed.kind
                if payload is None:  # not stored: nothing to derive, the frame is carried as it is
                    raw = RawMessage(at, source, connection, seq, stored_kind, None, event_id)
                    yield Replayed(raw_id, stored_kind, raw, [], False)
                    continue
                known = classified.get(stored_kind)
                if known is None:
                    known = classified[stored_kind] = (is_rest_kind(stored_kind), event_type_of(stored_kind))
                rest, event_type = known
                if rest:  # a REST answer of a resync: its own adapter, by the request stored
                    done = self._rest(connection_id, at, stored_kind, event_id, payload, connection, seq)
                else:
                    done = derive(adapter, kind, payload, received_at=at, source=source, connection_id=connection,
                                  seq=seq, event_id=event_id, max_frame_bytes=NO_LIMIT)
                    if event_type is not None:  # from the wire: carried over
                        done.raw = done.raw._replace(kind=with_event_type(done.raw.kind, event_type))
                # Replayed's fields in order; tuple.__new__ skips the keyword handling of its __new__ (every frame).
                yield _tuple_new(Replayed, (raw_id, stored_kind, done.raw, done.records, True))

    def _rest(self, connection_id: str, at: datetime, kind: str, event_id: str | None, payload: bytes,
              connection: UUID, seq: int) -> Derived:
        feed, options, _ = self.plan.resolve(connection_id, at)
        adapter = feed.rest_adapter(self.source, options, RestCall.stored(kind, event_id or ""))
        return derive(adapter, feed.kind, payload, received_at=at, source=self.source, connection_id=connection,
                      seq=seq, event_id=event_id, max_frame_bytes=NO_LIMIT, kind=kind)

    def _connection(self, connection_id: str, seq: int, at: datetime) -> tuple[Feed[Any], Adapter, UUID]:
        opened = self._open.get(connection_id)
        if opened is not None:
            self._open.move_to_end(connection_id)
            return opened
        feed, adapter, connect = self.plan.open(connection_id, at)
        self.opened.append((connection_id, connect))
        opened = (feed, adapter, UUID(connection_id))
        self._open[connection_id] = opened
        if len(self._open) > OPEN_ADAPTERS:
            self._open.popitem(last=False)
        if seq > 1:  # the range starts inside this connection: its earlier frames bring the adapter up to date
            since = connect.received_at if connect and connect.connection_id == connection_id else None
            earlier = self.stored.frames(self.source, since, at + timedelta(microseconds=1),
                                         connection_id=connection_id, before_seq=seq)
            self._warm(feed, adapter, opened[2], earlier)
        return opened

    def _warm(self, feed: Feed[Any], adapter: Adapter, connection: UUID, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            _, micros, _, seqs, event_ids, kinds, payloads = _columns(batch)
            for i, payload in enumerate(payloads):
                if payload is not None and not is_rest_kind(kinds[i]):  # REST answers keep no adapter state
                    derive(adapter, feed.kind, payload, received_at=EPOCH + timedelta(microseconds=micros[i]),
                           source=self.source, connection_id=connection, seq=seqs[i], event_id=event_ids[i],
                           max_frame_bytes=NO_LIMIT)
                self.warmed += 1


def _columns(batch: pa.RecordBatch) -> Sequence[list[Any]]:
    """The columns of a frame batch as Python lists: times as epoch microseconds (much cheaper than
    datetimes from Arrow), payloads as bytes (what derive takes)."""
    return (batch.column(0).to_pylist(), batch.column(1).cast(pa.int64()).to_pylist(), batch.column(2).to_pylist(),
            batch.column(3).to_pylist(), batch.column(4).to_pylist(), batch.column(5).to_pylist(),
            batch.column(6).cast(pa.binary()).to_pylist())


def today_versions(kinds: Iterable[str]) -> dict[str, str]:
    return {kind: registry.FEEDS[kind].version for kind in sorted(set(kinds)) if kind in registry.FEEDS}


def days(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut at UTC midnights: replay compares and reports a day at a time."""
    low = start
    while low < end:
        midnight = datetime(low.year, low.month, low.day, tzinfo=UTC) + timedelta(days=1)
        high = min(midnight, end)
        yield low, high
        low = high


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No cyclic garbage collection while replaying: records form no cycles and reference counting
    frees them, while the collector would scan every object alive, again and again, as rows pile up
    for the comparison (warehouse.collect.gc_settle says the same of the live path)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
