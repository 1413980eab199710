"""Replay's PostgreSQL side: stored frames and rows read in bulk as Arrow, and what `--into` asks of its target.

Reads stream through `COPY (SELECT …) TO STDOUT` as CSV into pyarrow: one query per table and
window, never one per frame (docs/replay.md, "Reading").
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from sqlalchemy import BigInteger, Boolean, Float, Integer
from sqlalchemy.dialects.postgresql import TIMESTAMP

from warehouse import schema
from warehouse.records import CollectorEvent, Quarantine

UTC_MICROS = pa.timestamp("us", tz="UTC")
FRAME_COLUMNS = ("id", "received_at", "connection_id", "seq", "event_id", "kind", "payload")
_BLOCK = 4 << 20  # CSV parsed this many bytes at a time
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)  # before any received_at (our clock)
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)  # after any


def arrow_type(column: Any) -> pa.DataType:
    """The Arrow type replay reads a column as (text for uuid, numeric and jsonb: exact)."""
    kind = column.type
    if isinstance(kind, TIMESTAMP):
        return UTC_MICROS
    if isinstance(kind, Float):
        return pa.float64()
    if isinstance(kind, BigInteger | Integer):
        return pa.int64()
    if isinstance(kind, Boolean):
        return pa.bool_()
    return pa.string()


def _expression(column: Any) -> sql.Composable:
    name = sql.Identifier(column.name)
    if isinstance(column.type, TIMESTAMP):
        return sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(name)
    if arrow_type(column) == pa.string():
        return sql.SQL("{}::text").format(name)
    return name


def _select(table: str, names: Sequence[str]) -> tuple[sql.Composable, pa.Schema]:
    columns = [schema.metadata.tables[table].c[name] for name in names]
    select = sql.SQL(", ").join(_expression(c) for c in columns)
    return select, pa.schema([(c.name, arrow_type(c)) for c in columns])


class _CopyReader(io.RawIOBase):
    """A COPY … TO STDOUT as a file, for pyarrow's streaming CSV reader."""

    def __init__(self, copy: psycopg.Copy, first: Any) -> None:
        self._copy = copy
        self._left = memoryview(first)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = self._copy.read()
            if not chunk:
                return 0
            self._left = memoryview(chunk)
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def _copy_batches(url: str, query: sql.Composable, params: Sequence[Any], arrow: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Stream the rows of `query` as record batches of `arrow`'s columns."""
    wire = pa.schema([(f.name, pa.int64() if f.type == UTC_MICROS else f.type) for f in arrow])
    conn = psycopg.connect(url, autocommit=True)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        copying = conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query), params)
        copy = copying.__enter__()
        first = copy.read()
        if not first:  # no rows (pyarrow's reader wants at least one)
            copying.__exit__(None, None, None)
            return
        reader = pacsv.open_csv(
            io.BufferedReader(_CopyReader(copy, first), _BLOCK),
            read_options=pacsv.ReadOptions(column_names=wire.names, block_size=_BLOCK, use_threads=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=wire, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
                true_values=["t"], false_values=["f"]),
        )
        for batch in reader:
            yield pa.RecordBatch.from_arrays(
                [column.cast(field.type) for column, field in zip(batch.columns, arrow, strict=True)], schema=arrow)
        # Ended normally: finish the COPY. (A reader that stops early just closes the connection,
        # which ends the COPY on the server too.)
        copying.__exit__(None, None, None)
    finally:
        conn.close()


def frames(url: str, source: str, start: datetime | None, end: datetime, *, connection_id: str | None = None,
           before_seq: int | None = None, connections: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The frames of `source` received in [start, end), in (received_at, connection_id, seq) order:
    within a connection, seq order. With `connection_id`: only that connection's, below `before_seq`.
    With `connections`: only those connections' frames."""
    select, arrow = _select("raw_messages", FRAME_COLUMNS)
    where = [sql.SQL("source = %s"), sql.SQL("received_at < %s")]
    params: list[Any] = [source, end]
    if start is not None:
        where.append(sql.SQL("received_at >= %s"))
        params.append(start)
    if connection_id is not None:
        where += [sql.SQL("connection_id = %s"), sql.SQL("seq < %s")]
        params += [connection_id, before_seq]
    if connections is not None:
        where.append(sql.SQL("connection_id = ANY(%s::uuid[])"))
        params.append(list(connections))
    query = sql.SQL("SELECT {} FROM raw_messages WHERE {} ORDER BY received_at, connection_id, seq").format(
        select, sql.SQL(" AND ").join(where))
    return _copy_batches(url, query, params, arrow)


def frame_ids(url: str, source: str, start: datetime, end: datetime) -> pa.Array:
    """The ids of the frames of `source` received in [start, end), in no particular order."""
    select, arrow = _select("raw_messages", ("id",))
    query = sql.SQL("SELECT {} FROM raw_messages WHERE source = %s AND received_at >= %s AND received_at < %s").format(
        select)
    return pa.concat_arrays([pa.array([], pa.int64())]
                            + [batch.column(0) for batch in _copy_batches(url, query, [source, start, end], arrow)])


def connections(url: str, source: str, start: datetime, end: datetime) -> list[tuple[str, int]]:
    """The connections of `source` with frames received in [start, end), with how many each, by id."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT connection_id::text, count(*) FROM raw_messages WHERE source = %s"
                            " AND received_at >= %s AND received_at < %s GROUP BY 1 ORDER BY 1",
                            (source, start, end)).fetchall()
    return [(str(c), int(n)) for c, n in rows]


def derived(url: str, table: str, source: str, start: datetime, end: datetime,
            legacy_events: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
    """Every column of the rows of `table` derived from `source`'s frames received in [start, end).
    With `legacy_events` (collector_events), instead the rows of those events that name a connection
    but no frame: written before a frame's control events were linked to it (replay attributes them)."""
    names = [c.name for c in schema.metadata.tables[table].columns]
    select, arrow = _select(table, names)
    linked = sql.SQL("raw_id IS NOT NULL")
    params: list[Any] = [source, start, end]
    if legacy_events:
        linked = sql.SQL("raw_id IS NULL AND connection_id IS NOT NULL AND event = ANY(%s)")
        params.append(list(legacy_events))
    query = sql.SQL("SELECT {} FROM {} WHERE source = %s AND received_at >= %s AND received_at < %s AND {}").format(
        select, sql.Identifier(table), linked)
    return _copy_batches(url, query, params, arrow)


def span(url: str, source: str) -> tuple[datetime, datetime] | None:
    """When the first and the last frame of `source` were received (None: no frame)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT min(received_at), max(received_at) FROM raw_messages WHERE source = %s",
                           (source,)).fetchone()
    return None if row is None or row[0] is None else (row[0], row[1])


def sources(url: str) -> list[str]:
    """The sources with frames (for saying which there are when a name is wrong)."""
    with psycopg.connect(url, autocommit=True) as conn:
        # a loose index scan: one probe per source, not a pass over every frame
        rows = conn.execute("""
            WITH RECURSIVE s(source) AS (
                SELECT min(source) FROM raw_messages
                UNION ALL SELECT (SELECT min(source) FROM raw_messages WHERE source > s.source)
                FROM s WHERE s.source IS NOT NULL)
            SELECT source FROM s WHERE source IS NOT NULL""").fetchall()
    return [source for (source,) in rows]


def connects(url: str, source: str, end: datetime) -> list[tuple[datetime, str, Any]]:
    """(received_at, connection_id, detail) of every connect event of `source` before `end`, oldest first."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT received_at, connection_id::text, detail FROM collector_events WHERE source = %s"
            " AND event = 'connect' AND received_at < %s ORDER BY received_at", (source, end)).fetchall()
    return [(at, connection, detail) for at, connection, detail in rows]


def lifecycle(url: str, source: str, start: datetime | None, end: datetime,
              legacy_events: Sequence[str]) -> list[CollectorEvent]:
    """The collector_events of `source` in [start, end) that no frame derived: connects, disconnects,
    reconnect attempts, commands… (not the rows of `legacy_events` naming a connection but no frame)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT received_at, source, connection_id, event, detail FROM collector_events"
            " WHERE source = %s AND received_at >= %s AND received_at < %s AND raw_id IS NULL"
            " AND NOT (connection_id IS NOT NULL AND event = ANY(%s)) ORDER BY received_at",
            (source, start or BEGINNING, end, list(legacy_events))).fetchall()
    return [CollectorEvent(*row) for row in rows]


def quarantined(url: str, raw_ids: Sequence[int]) -> list[tuple[int, Quarantine]]:
    """The quarantine rows of these frames (those replay cannot derive again), by raw id."""
    if not raw_ids:
        return []
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT raw_id, received_at, source, connection_id, reason, frame FROM quarantine WHERE raw_id = ANY(%s)",
            (list(raw_ids),)).fetchall()
    return [(raw_id, Quarantine(*rest)) for raw_id, *rest in rows]


def written(url: str, source: str, start: datetime, end: datetime,
            events_end: datetime) -> tuple[dict[str, int], Counter[Any]]:
    """What an earlier (interrupted) replay into this database already wrote for `source`: per
    connection the highest seq of the frames received in [start, end), and the lifecycle events
    (received_at, connection_id, event) before `events_end` (a connect may predate `start`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        seqs = conn.execute(
            "SELECT connection_id::text, max(seq) FROM raw_messages WHERE source = %s AND received_at >= %s"
            " AND received_at < %s GROUP BY connection_id", (source, start, end)).fetchall()
        events = conn.execute(
            "SELECT received_at, connection_id, event FROM collector_events WHERE source = %s AND received_at < %s"
            " AND raw_id IS NULL", (source, events_end)).fetchall()
    return dict(seqs), Counter((at, _uuid(connection), event) for at, connection, event in events)


def ensure_partitions(url: str, first: date, days: int) -> None:
    """Daily partitions for the days a replay writes (history: the writer only makes the coming days')."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT warehouse_ensure_partitions(%s, %s)", (first, days))


def _uuid(value: Any) -> UUID | None:
    return None if value is None else UUID(str(value))
