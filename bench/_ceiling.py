"""PostgreSQL's own ceiling: a firehose run's rows COPY'd back into a fresh database from pre-built bytes.

What `warehouse collect` stored in a run is read back once as binary COPY data (the writer's own wire
form: the same columns, in the same order) and cut into the writer's batches (`batch_rows` rows:
each batch's frames with the rows derived from them). Then a client that only sends those bytes —
BEGIN, COPY raw_messages, COPY each derived table, COMMIT — writes them into a fresh copy of the
template, on one connection, or on two taking batches in turn (the writer's second connection, with
no order kept between them: an upper bound). The client costs ~nothing, so the frames/s are what the
server does with these rows on this machine: no collector, whatever its CPU a frame, can store more
(it also reserves ids and writes a fence and marker a batch, which this leaves out).
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import psycopg

HEADER = b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)


@dataclass
class Table:
    name: str
    columns: list[str]
    tuples: list[bytes]  # each row's binary COPY tuple
    batch_of: list[int]  # the batch each row belongs to


def _tuples(data: bytes) -> list[tuple[bytes, int]]:
    """Split binary COPY data into its tuples, with the int8 of each tuple's last field (the id)."""
    if not data.startswith(HEADER[:11]):
        raise ValueError("not binary COPY data")
    (extension,) = struct.unpack_from("!i", data, 15)
    at = 19 + extension
    out = []
    unpack_short, unpack_int = struct.Struct("!h").unpack_from, struct.Struct("!i").unpack_from
    while True:
        (fields,) = unpack_short(data, at)
        if fields == -1:
            return out
        start, at = at, at + 2
        last = 0
        for _ in range(fields):
            (length,) = unpack_int(data, at)
            at += 4
            if length > 0:
                last = at
                at += length
        out.append((data[start:at], struct.unpack_from("!q", data, last)[0] if last else -1))


def derived_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table of rows derived from frames (partitioned parents with a raw_id), quarantine aside."""
    return [name for (name,) in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'raw_id'"
        " WHERE c.relkind = 'p' AND c.relnamespace = 'public'::regnamespace AND c.relname <> 'quarantine'")]


def read_run(url: str, source: str, batch_rows: int = 10_000) -> list[Table]:
    """The run's raw frames and derived rows as binary COPY tuples, each assigned to a writer-sized batch."""
    with psycopg.connect(url) as conn:
        tables = []
        for name, id_column in [("raw_messages", "id"), *((name, "raw_id") for name in derived_tables(conn))]:
            columns = [c for (c,) in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
                " AND attname <> %s ORDER BY attnum", (name, id_column))] + [id_column]
            buffer = io.BytesIO()
            select = ", ".join(f'"{c}"' for c in columns)
            with conn.cursor().copy(f'COPY (SELECT {select} FROM "{name}" WHERE source = %s AND "{id_column}" IS NOT'
                                    f' NULL ORDER BY "{id_column}") TO STDOUT (FORMAT binary)', (source,)) as copy:
                for chunk in copy:
                    buffer.write(chunk)
            rows = _tuples(buffer.getvalue())
            if rows:
                tables.append(Table(name, columns, [row for row, _ in rows], [raw_id for _, raw_id in rows]))
    # Batches of whole frames, about batch_rows rows each (frames and their derived rows), as the writer cuts;
    # a run too small for eight such batches is cut into eight, so that both connections have work.
    per_frame: dict[int, int] = {}
    for table in tables:
        for raw_id in table.batch_of:
            per_frame[raw_id] = per_frame.get(raw_id, 0) + 1
    if not per_frame:
        raise SystemExit(f"--ceiling: the run stored no {source} frames to send again")
    batch_rows = min(batch_rows, max(1, sum(per_frame.values()) // 8))
    batch_of_frame, batch, rows = {}, 0, 0
    for raw_id in sorted(per_frame):
        if rows >= batch_rows:
            batch, rows = batch + 1, 0
        batch_of_frame[raw_id] = batch
        rows += per_frame[raw_id]
    for table in tables:
        table.batch_of = [batch_of_frame[raw_id] for raw_id in table.batch_of]
    return tables


def batches(tables: list[Table]) -> list[list[tuple[str, list[str], bytes]]]:
    """Each batch's COPY data, table by table (raw frames first, as the writer sends them)."""
    count = max(max(t.batch_of) for t in tables) + 1
    parts: list[dict[str, list[bytes]]] = [{} for _ in range(count)]
    for table in tables:
        for row, batch in zip(table.tuples, table.batch_of, strict=True):
            parts[batch].setdefault(table.name, []).append(row)
    columns = {t.name: t.columns for t in tables}
    return [[(name, columns[name], HEADER + b"".join(rows) + TRAILER) for name, rows in part.items()] for part in parts]


async def _write(url: str, work: list[list[tuple[str, list[str], bytes]]], connections: int) -> float:
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    try:
        async def one(conn: asyncpg.Connection, mine: list[list[tuple[str, list[str], bytes]]]) -> None:
            for batch in mine:
                async with conn.transaction():
                    for name, columns, data in batch:
                        await conn.copy_to_table(name, source=io.BytesIO(data), columns=columns, format="binary")

        started = time.perf_counter()
        await asyncio.gather(*(one(conn, work[n::connections]) for n, conn in enumerate(conns)))
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


def write(url: str, work: list[list[tuple[str, list[str], bytes]]], connections: int) -> dict[str, Any]:
    """Send every batch; the wall time and the client's CPU time."""
    cpu = time.process_time()
    seconds = asyncio.run(_write(url, work, connections))
    return {"seconds": seconds, "client_cpu_s": time.process_time() - cpu}
