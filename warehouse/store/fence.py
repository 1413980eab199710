"""Fencing where rows are committed: each batch carries the claim epoch its frames were received under.

The collector's claims (collect/claims.py) tell the writer, per source, the epoch this process holds
(`Fencing.epochs`); `Writer.put` stamps each unit with it. A batch's commit message checks the epochs
in the same round trip as its COMMIT (`warehouse_claims_fence`, migration 0013): while they are
current it commits as always; once a takeover has moved one on, the batch is *late* and is stored by
`late_plan`'s rules instead — its frames still (they were received legitimately), except those whose
vendor identity the newer holder stored already, plus an `overlap` row per source. While a feed is
*watched* (a handover whose late frames may still come), its holder's frames register their
identities too, so whichever copy of an event is committed second is the one left out. docs/claims.md
gives the argument; this module knows the SQL, not the claims.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from warehouse.records import EVENT_OVERLAP, CollectorEvent, RawMessage
from warehouse.store.spool import Unit
from warehouse.store.spoolcodec import Epochs

FENCED = "OW001"  # the SQLSTATE warehouse_claims_fence raises when an epoch moved on

# A frame's vendor identity (Feed.identity) from the frame and its records; None: it has none.
Identify = Callable[[RawMessage, Sequence[Any]], str | None]

REGISTER = """
INSERT INTO collector_handover_keys AS k (source, key, epoch) SELECT $1, key, $3 FROM unnest($2::text[]) AS key
ON CONFLICT (source, key) DO UPDATE SET epoch = k.epoch
RETURNING key, epoch
"""
WATCH = "SELECT epoch, watch FROM collector_claims WHERE feed = $1"
CURRENT = "SELECT feed, epoch, watch FROM collector_claims WHERE feed = ANY($1::text[])"


class Fenced(Exception):
    """A batch's epochs are no longer current: it is late."""


def is_fenced(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) == FENCED


@dataclass
class Mark:
    """Frames of one source received under one epoch and stored while another held the feed (late),
    or left out as copies of events already stored: counted between two overlap rows."""

    stored: int = 0
    copies_left_out: int = 0
    first: datetime | None = None
    last: datetime | None = None
    checked: bool = True  # identities could be checked (the handover was still watched)

    def add(self, times: Sequence[datetime], stored: int, copies: int, checked: bool) -> None:
        self.stored += stored
        self.copies_left_out += copies
        if times:
            self.first = min(times) if self.first is None else min(self.first, *times)
            self.last = max(times) if self.last is None else max(self.last, *times)
        self.checked = self.checked and checked


@dataclass
class Fencing:
    """What the writer fences with; the claims set it, the writer reads it."""

    epochs: dict[str, int] = field(default_factory=dict)  # source → the epoch this process holds now
    watched: set[str] = field(default_factory=set)  # sources whose frames register their identities
    identify: Identify | None = None
    # (source, epoch received under, epoch of the holder then) → what was stored late or left out, not yet
    # in an overlap row (the claims write them, a few seconds apart: see overlap_rows)
    marks: dict[tuple[str, int, int], Mark] = field(default_factory=dict)
    late_stored: Counter[str] = field(default_factory=Counter)  # late frames stored, per source
    copies_left_out: Counter[str] = field(default_factory=Counter)  # frames whose event was stored already

    def committed(self, done: Plan) -> None:
        for key, mark in done.marks.items():
            source, epoch, holder_epoch = key
            total = self.marks.setdefault(key, Mark())
            total.add([t for t in (mark.first, mark.last) if t is not None], mark.stored, mark.copies_left_out,
                      mark.checked)
            if epoch != holder_epoch:
                self.late_stored[source] += mark.stored
            self.copies_left_out[source] += mark.copies_left_out
        for source, _epoch in done.unwatch:
            self.watched.discard(source)

    def overlap_rows(self) -> list[CollectorEvent]:
        """The overlap rows for what was marked since the last call: when, how many, whether checked."""
        marks, self.marks = self.marks, {}
        now = datetime.now(UTC)
        return [CollectorEvent(mark.first or now, source, None, EVENT_OVERLAP, {
            "epoch": epoch, "holder_epoch": holder_epoch, "late": epoch != holder_epoch,
            "frames_stored": mark.stored, "copies_left_out": mark.copies_left_out,
            "identities_checked": mark.checked, "from": (mark.first or now).isoformat(),
            "to": (mark.last or now).isoformat(), "recorded_at": now.isoformat()})
            for (source, epoch, holder_epoch), mark in sorted(marks.items())]

    def source_of(self, unit: Unit) -> str | None:
        raw, rows = unit
        if raw is not None:
            return str(raw.source)
        return str(rows[0].source) if rows else None

    def sources_of(self, units: Sequence[Unit]) -> Counter[str | None]:
        """How many of `units` each source has, as `source_of` tells it: frames in one pass (a batch's are
        thousands), the units without a frame one by one."""
        counts: Counter[str | None] = Counter([str(raw.source) for raw, _rows in units if raw is not None])
        if counts.total() < len(units):  # some have no frame (collector events)
            counts.update(self.source_of(unit) for unit in units if unit[0] is None)
        return counts

    def identity(self, unit: Unit) -> str | None:
        raw, rows = unit
        if raw is None or self.identify is None:
            return None
        return self.identify(raw, rows)


def literal(text: str) -> str:
    """A text literal for the commit message (a simple query: no parameters; standard strings are on)."""
    if "\x00" in text:
        raise ValueError("a feed name cannot hold NUL")
    return "'" + text.replace("'", "''") + "'"


def fence_sql(epochs: Epochs) -> str:
    """The statement that opens the commit message of a batch received under `epochs`."""
    if not epochs:
        return ""
    sources, values = zip(*sorted(epochs.items()), strict=True)
    return (f"SELECT warehouse_claims_fence(ARRAY[{', '.join(map(literal, sources))}]::text[],"
            f" ARRAY[{', '.join(str(int(v)) for v in values)}]::bigint[]); ")


def unwatch_sql(source: str, epoch: int) -> str:
    """Ends a feed's watch (every late epoch settled, and the holder's stream is past the copies)."""
    name = literal(source)
    return (f"UPDATE collector_claims SET watch = '[]'::jsonb WHERE feed = {name} AND epoch = {int(epoch)}"
            " AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(watch) AS w WHERE NOT (w->>'settled')::boolean); "
            f"DELETE FROM collector_handover_keys WHERE source = {name}"
            f" AND (SELECT watch FROM collector_claims WHERE feed = {name}) = '[]'::jsonb; ")


@dataclass
class Plan:
    """What one commit stores: its units (copies left out), the epochs its message fences with, the
    watches it ends, and what it marks (counted in Fencing.marks once committed)."""

    units: list[Unit]
    epochs: Epochs
    unwatch: list[tuple[str, int]] = field(default_factory=list)
    marks: dict[tuple[str, int, int], Mark] = field(default_factory=dict)

    def sql(self) -> str:
        """What opens the commit message: the fence, then the watches it ends."""
        return fence_sql(self.epochs) + "".join(unwatch_sql(source, epoch) for source, epoch in self.unwatch)


async def plan(conn: asyncpg.Connection, fencing: Fencing, units: list[Unit], epochs: Epochs,
               current: dict[str, tuple[int, list[dict[str, Any]]]] | None) -> Plan:
    """Which units a commit stores. `current`: None for a batch assumed current (its sources' epochs are
    this process's; only watched ones register); else each source's epoch and watch as just read, for a
    batch the fence refused (late sources register under their old epoch, and are marked)."""
    if current is not None:  # a feed whose claim is gone altogether (removed by hand) is not fenced any more
        epochs = {s: e for s, e in epochs.items() if s in current}
    late = {s: current[s][0] for s, e in epochs.items() if current[s][0] != e} if current else {}  # → epoch now
    register = {s for s in epochs if s in fencing.watched} | set(late)
    if not register:
        return Plan(units, {**epochs, **late})
    keys: dict[str, list[tuple[int, str]]] = {}  # source → (unit index, identity)
    for index, unit in enumerate(units):
        source = fencing.source_of(unit)
        if source in register:
            key = fencing.identity(unit)
            if key is not None:
                keys.setdefault(source, []).append((index, key))
    dropped: set[int] = set()
    result = Plan([], {**epochs, **late})
    for source in sorted(register):
        epoch = epochs[source]
        found = keys.get(source, [])
        owner: dict[str, int] = {}
        if found:
            for key, registered in await conn.fetch(REGISTER, source, sorted({k for _, k in found}), epoch):
                owner[key] = registered
        copies = [i for i, k in found if owner.get(k, epoch) != epoch]
        dropped.update(copies)
        times = [raw.received_at for raw, _ in units if raw is not None and raw.source == source]
        if source in late:
            watch = current[source][1] if current else []
            stored = sum(raw is not None and raw.source == source for i, (raw, _) in enumerate(units)
                         if i not in dropped)
            checked = any(w.get("epoch") == epoch for w in watch)
            if stored or copies:  # (a late batch of events only, such as an overlap row itself, marks nothing)
                result.marks[source, epoch, late[source]] = Mark(stored, len(copies), min(times, default=None),
                                                                 max(times, default=None), checked)
        elif found:
            held_epoch, watch = await _watch(conn, source)
            new = any(owner.get(k) == epoch for _, k in found)
            if held_epoch == epoch and (not watch or (new and all(w.get("settled") for w in watch))):
                result.unwatch.append((source, epoch))
            if copies:
                copied = [units[i][0].received_at for i in copies if units[i][0] is not None]
                result.marks[source, epoch, epoch] = Mark(0, len(copies), min(copied, default=None),
                                                          max(copied, default=None))
    result.units = [u for i, u in enumerate(units) if i not in dropped]
    return result


async def current_claims(conn: asyncpg.Connection, sources: Sequence[str]) -> dict[str, tuple[int, list[Any]]]:
    return {feed: (epoch, list(watch or [])) for feed, epoch, watch in await conn.fetch(CURRENT, list(sources))}


async def _watch(conn: asyncpg.Connection, source: str) -> tuple[int | None, list[dict[str, Any]]]:
    row = await conn.fetchrow(WATCH, source)
    return (None, []) if row is None else (row["epoch"], list(row["watch"] or []))
