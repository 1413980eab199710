"""What the collector reads back from the warehouse: where to resume after a restart, where a gap
began, and what a resync fetches. Each read is a few statements through SQLAlchemy on a pooled
connection of the store's engine (store/engine.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from warehouse.store.engine import pooled
from warehouse.store.spool import SpooledConnection

# Distinct fixture ids of a source since a time, one index probe per fixture (a loose index scan
# on the (fixture_id, …, received_at) lookup index; the time bound prunes to the recent partitions),
# instead of reading every row of the last day.
_FIXTURES = """
WITH RECURSIVE f AS (
    (SELECT fixture_id FROM {table} WHERE source = :source AND received_at > :since ORDER BY fixture_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.fixture_id FROM {table} AS t WHERE t.source = :source AND t.received_at > :since
            AND t.fixture_id > f.fixture_id ORDER BY t.fixture_id LIMIT 1)
    FROM f WHERE f.fixture_id IS NOT NULL
)
SELECT fixture_id FROM f WHERE fixture_id IS NOT NULL
"""
_BOOKMAKERS = text("SELECT DISTINCT bookmaker FROM price_ticks WHERE source = :source AND fixture_id = :fixture"
                   " AND received_at > :since"
                   " AND bookmaker IS NOT NULL ORDER BY bookmaker")


async def last_frame_before(engine: AsyncEngine, source: str, before: datetime) -> datetime | None:
    """When the newest frame of `source` stored before `before` came: where a gap began."""
    async with pooled(engine) as conn:
        found: datetime | None = await conn.scalar(text(
            "SELECT max(received_at) FROM raw_messages WHERE source = :source AND received_at < :before"),
            {"source": source, "before": before})
        return found


async def fixtures_seen(engine: AsyncEngine, source: str, since: datetime, *,
                        bookmakers: bool = False) -> dict[str, tuple[str, ...]]:
    """Fixture ids `source` gave prices or metadata for since `since` (sorted), each with the
    bookmakers that priced it (when `bookmakers`; else an empty tuple)."""
    async with pooled(engine) as conn:
        ids: set[str] = set()
        for table in ("price_ticks", "fixture_changes"):
            ids.update(await conn.scalars(text(_FIXTURES.format(table=table)), {"source": source, "since": since}))
        found: dict[str, tuple[str, ...]] = {}
        for fixture in sorted(ids):
            found[fixture] = tuple(await conn.scalars(_BOOKMAKERS, {"source": source, "fixture": fixture,
                                                                    "since": since})) if bookmakers else ()
        return found


async def last_event_ids(engine: AsyncEngine, sources: list[str]) -> dict[str, str]:
    """Per source, the SSE event id of the newest frame stored (what to resume from after a restart)."""
    if not sources:
        return {}
    async with pooled(engine) as conn:
        found = {}
        for source in sources:
            event_id = await conn.scalar(text(
                "SELECT event_id FROM raw_messages WHERE source = :source AND event_id IS NOT NULL"
                " ORDER BY received_at DESC, id DESC LIMIT 1"), {"source": source})
            if event_id is not None:
                found[source] = event_id
        return found


async def unclosed_connections(engine: AsyncEngine, sources: list[str],
                               spooled: Mapping[UUID, SpooledConnection]) -> list[tuple[str, UUID, datetime]]:
    """Connections an earlier collector left open — it was killed or crashed, so it wrote no disconnect:
    (source, connection_id, when its last frame came: the gap's start). Per source, the newest lifecycle
    event stored, if a connect; and the connections `spooled` by that collector and not yet replayed,
    which are newer than anything stored: a disconnect there closes a connection (a clean stop while the
    database was away), frames there move the gap's start, and one connected there without a disconnect
    was left open."""
    if not sources:
        return []
    found = []
    async with pooled(engine) as conn:
        for source in sources:
            last = (await conn.execute(text(
                "SELECT event, connection_id, received_at FROM collector_events WHERE source = :source"
                " AND event IN ('connect', 'disconnect') ORDER BY received_at DESC LIMIT 1"),
                {"source": source})).first()
            if last is None or last.event != "connect":
                continue
            seen = await conn.scalar(text("SELECT max(received_at) FROM raw_messages WHERE source = :source"
                                          " AND received_at >= :since"), {"source": source, "since": last.received_at})
            found.append((source, UUID(str(last.connection_id)), seen or last.received_at))
    left = []
    for source, connection_id, at in found:
        known = spooled.get(connection_id)
        if known is None:
            left.append((source, connection_id, at))
        elif not known.closed:
            left.append((source, connection_id, max(at, known.last_at)))
    stored = {connection_id for _, connection_id, _ in found}
    return left + [(known.source, connection_id, known.last_at) for connection_id, known in spooled.items()
                   if known.source in sources and known.opened and not known.closed and connection_id not in stored]
