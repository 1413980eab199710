"""Fencing where rows are committed: each batch carries the claim epoch its frames were received under.

The collector's claims (collect/claims.py) tell the writer, per source, the epoch this process holds
(`Fencing.epochs`); `Writer.put` stamps each unit with it. A batch's commit message checks the epochs
in the same round trip as its COMMIT (`warehouse_claims_fence`, migration 0009): while they are
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
class Fencing:
    """What the writer fences with; the claims set it, the writer reads it."""

    epochs: dict[str, int] = field(default_factory=dict)  # source → the epoch this process holds now
    watched: set[str] = field(default_factory=set)  # sources whose frames register their identities
    identify: Identify | None = None
    late_stored: Counter[str] = field(default_factory=Counter)  # late frames stored, per source
    copies_left_out: Counter[str] = field(default_factory=Counter)  # frames whose event was stored already

    def committed(self, done: Plan) -> None:
        self.late_stored.update(done.late_stored)
        self.copies_left_out.update(done.copies_left_out)
        for source, _epoch in done.unwatch:
            self.watched.discard(source)

    def source_of(self, unit: Unit) -> str | None:
        raw, rows = unit
        if raw is not None:
            return str(raw.source)
        return str(rows[0].source) if rows else None

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
    """What one commit stores: its units (copies left out), overlap rows, the epochs its message
    fences with, and the watches it ends."""

    units: list[Unit]
    epochs: Epochs
    overlaps: list[CollectorEvent] = field(default_factory=list)
    unwatch: list[tuple[str, int]] = field(default_factory=list)
    late_stored: Counter[str] = field(default_factory=Counter)
    copies_left_out: Counter[str] = field(default_factory=Counter)

    def sql(self) -> str:
        """What opens the commit message: the fence, then the watches it ends."""
        return fence_sql(self.epochs) + "".join(unwatch_sql(source, epoch) for source, epoch in self.unwatch)


async def plan(conn: asyncpg.Connection, fencing: Fencing, units: list[Unit], epochs: Epochs,
               current: dict[str, tuple[int, list[dict[str, Any]]]] | None) -> Plan:
    """Which units a commit stores. `current`: None for a batch assumed current (its sources' epochs are
    this process's; only watched ones register); else each source's epoch and watch as just read, for a
    batch the fence refused (late sources register under their old epoch, and get an overlap row)."""
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
        result.copies_left_out[source] += len(copies)
        if source in late:
            watch = current[source][1] if current else []
            kept = [u for i, u in enumerate(units) if i not in dropped and fencing.source_of(u) == source]
            result.overlaps.append(_overlap(source, epoch, late[source], watch, units, kept, len(copies)))
            result.late_stored[source] += sum(raw is not None for raw, _ in kept)
        elif found:
            held_epoch, watch = await _watch(conn, source)
            new = any(owner.get(k) == epoch for _, k in found)
            if held_epoch == epoch and (not watch or (new and all(w.get("settled") for w in watch))):
                result.unwatch.append((source, epoch))
            if copies:
                result.overlaps.append(_overlap(source, epoch, epoch, watch, units, [], len(copies)))
    result.units = [u for i, u in enumerate(units) if i not in dropped]
    return result


async def current_claims(conn: asyncpg.Connection, sources: Sequence[str]) -> dict[str, tuple[int, list[Any]]]:
    return {feed: (epoch, list(watch or [])) for feed, epoch, watch in await conn.fetch(CURRENT, list(sources))}


async def _watch(conn: asyncpg.Connection, source: str) -> tuple[int | None, list[dict[str, Any]]]:
    row = await conn.fetchrow(WATCH, source)
    return (None, []) if row is None else (row["epoch"], list(row["watch"] or []))


def _overlap(source: str, epoch: int, now_epoch: int, watch: list[dict[str, Any]], units: list[Unit],
             kept: list[Unit], copies: int) -> CollectorEvent:
    """The row that marks late frames (or copies left out) of `source`: when they were received, how
    many, and whether their identities could be checked."""
    times = [raw.received_at for raw, _ in units if raw is not None and raw.source == source]
    watched = any(w.get("epoch") == epoch for w in watch) or epoch == now_epoch
    first = min(times) if times else datetime.now(UTC)
    return CollectorEvent(first, source, None, EVENT_OVERLAP, {
        "epoch": epoch, "holder_epoch": now_epoch, "late": epoch != now_epoch,
        "frames_stored": sum(raw is not None for raw, _ in kept), "copies_left_out": copies,
        "identities_checked": watched, "from": first.isoformat(),
        "to": (max(times) if times else first).isoformat(), "stored_at": datetime.now(UTC).isoformat()})
