"""Reads the collector needs from the warehouse itself."""

from __future__ import annotations

import asyncpg
import psycopg


async def last_event_ids(url: str, sources: list[str]) -> dict[str, str]:
    """Per source, the SSE event id of the newest frame stored (what to resume from after a restart)."""
    if not sources:
        return {}
    conn = await asyncpg.connect(url, timeout=10)
    try:
        found = {}
        for source in sources:
            event_id = await conn.fetchval(
                "SELECT event_id FROM raw_messages WHERE source = $1 AND event_id IS NOT NULL"
                " ORDER BY received_at DESC, id DESC LIMIT 1", source)
            if event_id is not None:
                found[source] = event_id
        return found
    finally:
        await conn.close()


def select(url: str, sql: str, *params: object) -> list[tuple]:
    """Rows of one read-only query (the analysis queries, run on PostgreSQL)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.read_only = True
        return conn.execute(sql, params or None).fetchall()


def table_rows(url: str, names: tuple[str, ...]) -> dict[str, int]:
    """Exact row counts (fine for a demo; on a big warehouse prefer pg_class.reltuples)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}
