"""Per-source health read from the warehouse itself (`warehouse status`; the live counters are metrics.py's).

Gaps follow the collector_events convention: a `disconnect` opens a gap, the next `connect` of
the same source closes it; a disconnect whose reason is a clean shutdown is a planned gap. Resyncs
(REST calls healing a gap) are `resync_finished` rows. Who collects each feed, since when, and who
stands by: the claims (collector_claims, collector_processes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from warehouse.records import EVENT_CONNECT, EVENT_DISCONNECT, EVENT_RESYNC_FINISHED, SHUTDOWN
from warehouse.schema import FACT_TABLES
from warehouse.store.database import scalar
from warehouse.store.spool import read_backlog

# Loose index scan: the distinct sources of a table without reading all its rows.
_SOURCES = """
WITH RECURSIVE s AS (
    (SELECT source FROM {table} ORDER BY source LIMIT 1)
    UNION ALL
    SELECT (SELECT t.source FROM {table} t WHERE t.source > s.source ORDER BY t.source LIMIT 1)
    FROM s WHERE s.source IS NOT NULL
)
SELECT source FROM s WHERE source IS NOT NULL
"""
_DERIVED = [t for t in FACT_TABLES if t not in ("raw_messages", "collector_events", "quarantine")]


@dataclass
class ClaimStatus:
    """Who collects a feed: its holder (None: released, or never held), since when, and who stands by."""

    holder: str | None
    since: datetime | None
    epoch: int
    expires_in_s: float | None  # below zero: the holder stopped renewing (killed, or cut off from the database)
    standbys: list[str]
    last_holder: str | None = None  # who held it last, once released

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        return data


@dataclass
class SourceStatus:
    source: str
    last_frame_at: datetime | None
    last_frame_age_s: float | None
    frames_last_minute: int
    rows_last_minute: int
    reconnects_24h: int
    gaps_24h: int
    planned_gaps_24h: int  # of gaps_24h, those a clean shutdown opened (the collector was stopped on purpose)
    gap_seconds_24h: float
    quarantined_24h: int
    spool_backlog_frames: int
    resyncs_24h: int = 0  # resync passes finished
    resync_rows_24h: int = 0  # rows they derived
    resync_failures_24h: int = 0  # REST calls refused or failed, and passes that could not start
    last_resync_at: datetime | None = None
    claim: ClaimStatus | None = None  # None: no collector has claimed it (collected before claims existed)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("last_frame_at", "last_resync_at"):
            value = getattr(self, key)
            data[key] = value.isoformat() if value else None
        data["claim"] = self.claim.as_json() if self.claim else None
        return data


def source_status(url: str, spool_root: Path | None = None) -> list[SourceStatus]:
    backlog = read_backlog(spool_root) if spool_root else {}
    with psycopg.connect(url, autocommit=True) as conn:
        now: datetime = scalar(conn, "SELECT now()")
        sources = {row[0] for table in ("raw_messages", "collector_events") for row in
                   conn.execute(_SOURCES.format(table=table)).fetchall()} | set(backlog)
        gaps = _gaps(conn, now)
        resyncs = _resyncs(conn, now)
        claims = claim_status(conn)
        sources |= set(claims)
        result = []
        for source in sorted(sources):
            last = scalar(conn, "SELECT max(received_at) FROM raw_messages WHERE source = %s", (source,))
            frames = _count(conn, "raw_messages", source, now - timedelta(minutes=1))
            rows = sum(_count(conn, table, source, now - timedelta(minutes=1)) for table in _DERIVED)
            gap = gaps.get(source, _Gaps())
            passes, resync_rows, failures, last_resync = resyncs.get(source, (0, 0, 0, None))
            result.append(
                SourceStatus(
                    source=source,
                    last_frame_at=last,
                    # never below 0: the collector's clock may run a little ahead of the database's
                    last_frame_age_s=max(0.0, (now - last).total_seconds()) if last else None,
                    frames_last_minute=frames,
                    rows_last_minute=rows,
                    reconnects_24h=gap.reconnects,
                    gaps_24h=gap.gaps,
                    planned_gaps_24h=gap.planned,
                    gap_seconds_24h=round(gap.seconds, 3),
                    quarantined_24h=_count(conn, "quarantine", source, now - timedelta(hours=24)),
                    spool_backlog_frames=backlog.get(source, 0),
                    resyncs_24h=passes,
                    resync_rows_24h=resync_rows,
                    resync_failures_24h=failures,
                    last_resync_at=last_resync,
                    claim=claims.get(source),
                )
            )
        return result


def claim_status(conn: psycopg.Connection[Any]) -> dict[str, ClaimStatus]:
    """Each claimed feed's holder, since when, and the live processes standing by for it."""
    rows = conn.execute(
        "SELECT c.feed, c.holder, c.holder_process IS NOT NULL, c.since, c.epoch,"
        " extract(epoch FROM c.expires_at - now())::float8,"
        " coalesce((SELECT array_agg(p.name ORDER BY p.name) FROM collector_processes AS p WHERE c.feed = ANY (p.feeds)"
        "  AND p.expires_at > now() AND p.id IS DISTINCT FROM c.holder_process), '{}')"
        " FROM collector_claims AS c").fetchall()
    return {feed: ClaimStatus(holder if held else None, since if held else None, epoch,
                              left if held else None, list(standbys), None if held else holder)
            for feed, holder, held, since, epoch, left, standbys in rows}


def _count(conn: psycopg.Connection[Any], table: str, source: str, since: datetime) -> int:
    return int(scalar(conn, f"SELECT count(*) FROM {table} WHERE source = %s AND received_at > %s", (source, since)))


def _resyncs(conn: psycopg.Connection[Any], now: datetime) -> dict[str, tuple[int, int, int, datetime | None]]:
    """(passes, rows, calls refused or failed, when the last ended) per source over the last 24 hours."""
    rows = conn.execute(
        "SELECT source, count(*), coalesce(sum((detail->>'rows')::bigint), 0),"
        " coalesce(sum(coalesce((detail->>'failed')::bigint, 0) + coalesce((detail->>'refused')::bigint, 0)"
        " + (detail ? 'error')::int), 0), max(received_at)"
        " FROM collector_events WHERE received_at > %s AND event = %s GROUP BY source",
        (now - timedelta(hours=24), EVENT_RESYNC_FINISHED)).fetchall()
    return {source: (int(passes), int(derived), int(failures), last)
            for source, passes, derived, failures, last in rows}


@dataclass
class _Gaps:
    reconnects: int = 0  # gaps closed by a new connect
    gaps: int = 0  # disconnects that opened a gap
    planned: int = 0  # ... of which a clean shutdown (the collector was stopped on purpose)
    seconds: float = 0.0  # not listening


def _gaps(conn: psycopg.Connection[Any], now: datetime) -> dict[str, _Gaps]:
    """Gaps per source over the last 24 hours. A `disconnect` opens one (a clean shutdown says so in its
    reason: a planned gap), the next `connect` of the same source closes it."""
    since = now - timedelta(hours=24)
    events = conn.execute(
        "SELECT source, event, received_at, detail->>'reason' FROM collector_events"
        " WHERE received_at > %s AND event IN (%s, %s) ORDER BY source, received_at",
        (since, EVENT_CONNECT, EVENT_DISCONNECT),
    ).fetchall()
    result: dict[str, _Gaps] = {}
    open_since: dict[str, datetime] = {}
    for source, event, at, reason in events:
        gaps = result.setdefault(source, _Gaps())
        if event == EVENT_DISCONNECT:
            if source not in open_since:
                open_since[source] = at
                gaps.gaps += 1
                gaps.planned += reason == SHUTDOWN
        elif source in open_since:
            gaps.seconds += (at - open_since.pop(source)).total_seconds()
            gaps.reconnects += 1
    for source, started in open_since.items():
        result[source].seconds += (now - started).total_seconds()
    return result


def duration(seconds: float) -> str:
    """An age or a span as a person reads it: 42.0s, 7.5m, 26.0h."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
