"""Reads the collector needs from the warehouse itself."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

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


async def unclosed_connections(url: str, sources: list[str]) -> list[tuple[str, UUID, datetime]]:
    """Per source whose newest lifecycle event is a connect (its collector was killed or crashed, so no
    disconnect was written): (source, connection_id, when its last frame came — the gap's start)."""
    if not sources:
        return []
    conn = await asyncpg.connect(url, timeout=10)
    try:
        found = []
        for source in sources:
            last = await conn.fetchrow(
                "SELECT event, connection_id, received_at FROM collector_events WHERE source = $1"
                " AND event IN ('connect', 'disconnect') ORDER BY received_at DESC LIMIT 1", source)
            if last is None or last["event"] != "connect":
                continue
            seen = await conn.fetchval("SELECT max(received_at) FROM raw_messages WHERE source = $1"
                                       " AND received_at >= $2", source, last["received_at"])
            found.append((source, UUID(str(last["connection_id"])), seen or last["received_at"]))
        return found
    finally:
        await conn.close()


def scalar(conn: psycopg.Connection[Any], sql: str, params: Sequence[object] | None = None) -> Any:
    """The first column of the one row `sql` returns."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def select(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of one read-only query (the analysis queries, run on PostgreSQL)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.read_only = True
        return conn.execute(sql, params or None).fetchall()


def table_rows(url: str, names: tuple[str, ...]) -> dict[str, int]:
    """Exact row counts (fine for a demo; on a big warehouse prefer pg_class.reltuples)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: scalar(conn, f"SELECT count(*) FROM {name}") for name in names}
