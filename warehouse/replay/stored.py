"""Where replay reads stored frames and rows from: PostgreSQL (replay/postgres.py), or the Parquet export.

Both give the same Arrow shapes (`postgres.arrow_type`): frames in (received_at, connection_id,
seq) order, and the derived rows of a time window, table by table (docs/replay.md, "Reading").
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa

from warehouse import schema
from warehouse.lifecycle import layout
from warehouse.lifecycle.storage import Directory, Lake, open_lake
from warehouse.records import CollectorEvent, Quarantine
from warehouse.replay import postgres
from warehouse.store.database import redact_url

FRAME_SCHEMA = pa.schema([(c.name, postgres.arrow_type(c)) for c in
                          (schema.raw_messages.c[name] for name in postgres.FRAME_COLUMNS)])
BATCH_ROWS = 65_536


class Stored(Protocol):
    where: str  # for messages: which database or export

    def span(self, source: str) -> tuple[datetime, datetime] | None: ...
    def sources(self) -> list[str]: ...
    def frames(self, source: str, start: datetime | None, end: datetime, *, connection_id: str | None = None,
               before_seq: int | None = None, connections: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]: ...
    def connections(self, source: str, start: datetime, end: datetime) -> list[tuple[str, int]]: ...
    def frame_ids(self, source: str, start: datetime, end: datetime) -> pa.Array: ...
    def reopened(self) -> Stored: ...
    def derived(self, table: str, source: str, start: datetime, end: datetime,
                legacy_events: Sequence[str] = ()) -> Iterator[pa.RecordBatch]: ...
    def connects(self, source: str, end: datetime) -> list[tuple[datetime, str, Any]]: ...
    def derived_query(self, con: Any, table: str, source: str, start: datetime,
                      end: datetime) -> tuple[str, list[Any]] | None: ...
    def lifecycle(self, source: str, start: datetime | None, end: datetime,
                  legacy_events: Sequence[str]) -> list[CollectorEvent]: ...
    def quarantined(self, raw_ids: Sequence[int]) -> list[tuple[int, Quarantine]]: ...


class FromPostgres:
    def __init__(self, url: str) -> None:
        self.url = url
        self.where = f"PostgreSQL {redact_url(url)}"

    def span(self, source: str) -> tuple[datetime, datetime] | None:
        return postgres.span(self.url, source)

    def sources(self) -> list[str]:
        return postgres.sources(self.url)

    def frames(self, source: str, start: datetime | None, end: datetime, *, connection_id: str | None = None,
               before_seq: int | None = None, connections: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        return postgres.frames(self.url, source, start, end, connection_id=connection_id, before_seq=before_seq,
                         connections=connections)

    def connections(self, source: str, start: datetime, end: datetime) -> list[tuple[str, int]]:
        return postgres.connections(self.url, source, start, end)

    def frame_ids(self, source: str, start: datetime, end: datetime) -> pa.Array:
        return postgres.frame_ids(self.url, source, start, end)

    def reopened(self) -> FromPostgres:
        return self  # nothing open between calls

    def derived(self, table: str, source: str, start: datetime, end: datetime,
                legacy_events: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        return postgres.derived(self.url, table, source, start, end, legacy_events)

    def connects(self, source: str, end: datetime) -> list[tuple[datetime, str, Any]]:
        return postgres.connects(self.url, source, end)

    def derived_query(self, con: Any, table: str, source: str, start: datetime,
                      end: datetime) -> tuple[str, list[Any]] | None:
        return None  # no SQL of its own: read through `derived`

    def lifecycle(self, source: str, start: datetime | None, end: datetime,
                  legacy_events: Sequence[str]) -> list[CollectorEvent]:
        return postgres.lifecycle(self.url, source, start, end, legacy_events)

    def quarantined(self, raw_ids: Sequence[int]) -> list[tuple[int, Quarantine]]:
        return postgres.quarantined(self.url, raw_ids)


class FromParquet:
    """The export's files (warehouse.lifecycle.layout), read with DuckDB."""

    def __init__(self, root: Path | str | Lake, con: Any = None) -> None:
        import duckdb

        self.lake = open_lake(root)  # a directory, or a bucket read in place
        self.root = self.lake.root
        if isinstance(self.lake, Directory):
            there = layout.folder(self.lake.path, "raw_messages").is_dir()
        else:
            there = bool(self.lake.locations("raw_messages"))
        if not there:
            raise ValueError(f"no Parquet export at {self.root} (it has no raw_messages folder); give --from-parquet"
                             " the directory (or s3:// URL) `warehouse export` writes to")
        self.where = f"the Parquet export in {self.root}"
        self._con = con or duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self.lake.prepare(self._con)
        self._lock = threading.Lock()

    def reopened(self) -> FromParquet:
        """The same export on a DuckDB connection of its own (for a forked process), on one thread:
        its process is one of several sharing the cores."""
        import duckdb

        return FromParquet(self.lake, duckdb.connect(config={"threads": 1}))

    def _cursor(self) -> Any:
        with self._lock:  # each query on a connection of its own: replay reads from several threads
            return self._con.cursor()

    def _files(self, table: str, start: datetime | None = None, end: datetime | None = None) -> list[str]:
        """The table's day files that may hold rows received in [start, end)."""
        first = start.astimezone(UTC).date() if start else date.min
        last = (end - timedelta(microseconds=1)).astimezone(UTC).date() if end else date.max
        return [found for found in self.lake.locations(table)
                if (day := layout.day_of(Path(found))) is not None and first <= day <= last]

    def _read(self, files: list[str], select: str, where: str, params: list[Any], order: str = "") -> Any:
        query = f"SELECT {select} FROM read_parquet({_listing(files)}, union_by_name = true) WHERE {where} {order}"
        return self._cursor().execute(query, params)

    def span(self, source: str) -> tuple[datetime, datetime] | None:
        files = self._files("raw_messages")
        if not files:
            return None
        low, high = self._read(files, "min(received_at), max(received_at)", "source = ?", [source]).fetchone()
        return None if low is None else (low, high)

    def sources(self) -> list[str]:
        files = self._files("raw_messages")
        if not files:
            return []
        return [s for (s,) in self._read(files, "DISTINCT source", "true", [], "ORDER BY 1").fetchall()]

    def frames(self, source: str, start: datetime | None, end: datetime, *, connection_id: str | None = None,
               before_seq: int | None = None, connections: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        files = self._files("raw_messages", start, end)
        if not files:
            return iter(())
        where, params = ["source = ?", "received_at < ?"], [source, end]
        if start is not None:
            where.append("received_at >= ?")
            params.append(start)
        if connection_id is not None:
            where += ["CAST(connection_id AS VARCHAR) = ?", "seq < ?"]
            params += [connection_id, before_seq]
        if connections is not None:
            where.append("list_contains(?, CAST(connection_id AS VARCHAR))")
            params.append(list(connections))
        result = self._read(files, _select(FRAME_SCHEMA), " AND ".join(where), params,
                            "ORDER BY received_at, connection_id, seq")
        return _batches(result.to_arrow_reader(BATCH_ROWS), FRAME_SCHEMA)

    def derived(self, table: str, source: str, start: datetime, end: datetime,
                legacy_events: Sequence[str] = ()) -> Iterator[pa.RecordBatch]:
        query, params = self._derived_sql(table, source, start, end, legacy_events)
        if not query:
            return iter(())
        return _batches(self._cursor().execute(query, params).to_arrow_reader(BATCH_ROWS), _arrow_of(table))

    def derived_query(self, con: Any, table: str, source: str, start: datetime,
                      end: datetime) -> tuple[str, list[Any]] | None:
        """The SQL (and its parameters) that `derived` runs, for `con` (another DuckDB connection, now
        able to read the lake) to run itself: the rows then never leave DuckDB as Arrow. "" when the
        table has no file for the window."""
        found = self._derived_sql(table, source, start, end)
        if found[0]:
            self.lake.prepare(con)
        return found

    def _derived_sql(self, table: str, source: str, start: datetime, end: datetime,
                     legacy_events: Sequence[str] = ()) -> tuple[str, list[Any]]:
        files = self._files(table, start, end)
        if not files:
            return "", []
        linked, params = "raw_id IS NOT NULL", [source, start, end]
        if legacy_events:
            linked = "raw_id IS NULL AND connection_id IS NOT NULL AND list_contains(?, event)"
            params.append(list(legacy_events))
        return (f"SELECT {_select(_arrow_of(table))} FROM read_parquet({_listing(files)}, union_by_name = true)"
                f" WHERE source = ? AND received_at >= ? AND received_at < ? AND {linked}", params)

    def connections(self, source: str, start: datetime, end: datetime) -> list[tuple[str, int]]:
        files = self._files("raw_messages", start, end)
        if not files:
            return []
        return [(str(c), n) for c, n in self._read(
            files, "CAST(connection_id AS VARCHAR), count(*)", "source = ? AND received_at >= ? AND received_at < ?",
            [source, start, end], "GROUP BY 1 ORDER BY 1").fetchall()]

    def frame_ids(self, source: str, start: datetime, end: datetime) -> pa.Array:
        files = self._files("raw_messages", start, end)
        if not files:
            return pa.array([], pa.int64())
        ids = self._read(files, "CAST(id AS BIGINT) AS id", "source = ? AND received_at >= ? AND received_at < ?",
                         [source, start, end]).to_arrow_table().column(0)
        return ids.combine_chunks()

    def connects(self, source: str, end: datetime) -> list[tuple[datetime, str, Any]]:
        files = self._files("collector_events", None, end)
        if not files:
            return []
        rows = self._read(files, "received_at, CAST(connection_id AS VARCHAR), CAST(detail AS VARCHAR)",
                          "source = ? AND event = 'connect' AND received_at < ?", [source, end],
                          "ORDER BY received_at").fetchall()
        return [(at, connection, None if detail is None else orjson.loads(detail)) for at, connection, detail in rows]

    def lifecycle(self, source: str, start: datetime | None, end: datetime,
                  legacy_events: Sequence[str]) -> list[CollectorEvent]:
        from uuid import UUID

        files = self._files("collector_events", start, end)
        if not files:
            return []
        rows = self._read(
            files, "received_at, source, CAST(connection_id AS VARCHAR), event, CAST(detail AS VARCHAR)",
            "source = ? AND received_at >= ? AND received_at < ? AND raw_id IS NULL"
            " AND NOT (connection_id IS NOT NULL AND list_contains(?, event))",
            [source, start or postgres.BEGINNING, end, list(legacy_events)], "ORDER BY received_at").fetchall()
        return [CollectorEvent(at, src, None if conn is None else UUID(conn), event,
                               None if detail is None else orjson.loads(detail))
                for at, src, conn, event, detail in rows]

    def quarantined(self, raw_ids: Sequence[int]) -> list[tuple[int, Quarantine]]:
        from uuid import UUID

        files = self._files("quarantine")
        if not raw_ids or not files:
            return []
        rows = self._read(files, "raw_id, received_at, source, CAST(connection_id AS VARCHAR), reason, frame",
                          "list_contains(?, raw_id)", [list(raw_ids)]).fetchall()
        return [(raw_id, Quarantine(at, src, None if conn is None else UUID(conn), reason, frame))
                for raw_id, at, src, conn, reason, frame in rows]


_DUCKDB = {postgres.UTC_MICROS: "TIMESTAMPTZ", pa.float64(): "DOUBLE", pa.int64(): "BIGINT", pa.bool_(): "BOOLEAN",
           pa.string(): "VARCHAR"}


def _arrow_of(table: str) -> pa.Schema:
    return pa.schema([(c.name, postgres.arrow_type(c)) for c in schema.metadata.tables[table].columns])


def _listing(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _select(arrow: pa.Schema) -> str:
    return ", ".join(f"CAST({f.name} AS {_DUCKDB[f.type]}) AS {f.name}" for f in arrow)


def _batches(reader: Any, arrow: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        yield batch if batch.schema.equals(arrow) else batch.cast(arrow)


def resolve_range(stored: Stored, source: str, since: datetime | None,
                  until: datetime | None) -> tuple[datetime, datetime]:
    """[start, end) of the frames to replay: what was asked, within what is stored (UTC)."""
    for name, value in (("--since", since), ("--until", until)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must carry a time zone (it is read as UTC on the command line)")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    span = stored.span(source)
    if span is None:
        known = stored.sources()
        raise ValueError(f"no frames of source {source!r} in {stored.where}; "
                         + (f"its sources are: {', '.join(known)}" if known else "it holds no frames at all"))
    first, last = span[0].astimezone(UTC), span[1].astimezone(UTC) + timedelta(microseconds=1)
    start = max(since.astimezone(UTC), first) if since else first
    end = min(until.astimezone(UTC), last) if until else last
    return start, max(start, end)


_DONE = object()


def prefetch(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Read the next batches in a thread while the caller works on this one: reading (DuckDB, the
    COPY's CSV) releases the GIL, so it overlaps with deriving."""
    import queue

    ready: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            item: Any = _DONE
        except BaseException as exc:  # handed to the consumer, raised there
            item = exc
        finally:
            close = getattr(batches, "close", None)
            if stop.is_set() and close is not None:
                close()
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="replay-read", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)
