"""What a resync needs to know from the warehouse: where the gap began, and what to fetch."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# Distinct fixture ids of a source since a time, one index probe per fixture (a loose index scan
# on the (fixture_id, …, received_at) lookup index; the time bound prunes to the recent partitions),
# instead of reading every row of the last day.
_FIXTURES = """
WITH RECURSIVE f AS (
    (SELECT fixture_id FROM {table} WHERE source = $1 AND received_at > $2 ORDER BY fixture_id LIMIT 1)
    UNION ALL
    SELECT (SELECT t.fixture_id FROM {table} AS t WHERE t.source = $1 AND t.received_at > $2
            AND t.fixture_id > f.fixture_id ORDER BY t.fixture_id LIMIT 1)
    FROM f WHERE f.fixture_id IS NOT NULL
)
SELECT fixture_id FROM f WHERE fixture_id IS NOT NULL
"""
_BOOKMAKERS = ("SELECT DISTINCT bookmaker FROM price_ticks WHERE source = $1 AND fixture_id = $2 AND received_at > $3"
               " AND bookmaker IS NOT NULL ORDER BY bookmaker")


async def last_frame_before(url: str, source: str, before: datetime) -> datetime | None:
    """When the newest frame of `source` stored before `before` came: where a gap began."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        found: datetime | None = await conn.fetchval(
            "SELECT max(received_at) FROM raw_messages WHERE source = $1 AND received_at < $2", source, before)
        return found
    finally:
        await conn.close()


async def fixtures_seen(url: str, source: str, since: datetime, *,
                        bookmakers: bool = False) -> dict[str, tuple[str, ...]]:
    """Fixture ids `source` gave prices or metadata for since `since` (sorted), each with the
    bookmakers that priced it (when `bookmakers`; else an empty tuple)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        ids: set[str] = set()
        for table in ("price_ticks", "fixture_changes"):
            ids.update(row[0] for row in await conn.fetch(_FIXTURES.format(table=table), source, since))
        found: dict[str, tuple[str, ...]] = {}
        for fixture in sorted(ids):
            books = await conn.fetch(_BOOKMAKERS, source, fixture, since) if bookmakers else []
            found[fixture] = tuple(row[0] for row in books)
        return found
    finally:
        await conn.close()
