"""Deriving a source's frames again, a window at a time, in worker processes for `replay --check`.

Deriving (the adapters, in Python) is most of a check's work and one interpreter does it on one
core. A source's connections are independent (each gets a fresh adapter), so each window's are shared
out among processes by how many frames they have: each process reads its connections' frames, derives them
as `Deriver` does (the one path, `warehouse.feeds.derive`) and compares the rows of its frames
itself (compare.py), handing back only the counts and examples: rows never cross between processes.
Processes are forked, so they run the adapters the caller has (patched ones too, as a test's)
without importing anything again.

One connection per window cannot be shared out: then one process derives it all, as before.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import pyarrow as pa

from warehouse.replay import rows
from warehouse.replay.derivation import Deriver, quiet_gc
from warehouse.replay.stored import Stored, prefetch

FLUSH_ROWS = 200_000  # rows derived again are handed on in chunks of about this many
KEYS = ["id", "received_at", "connection_id"]
WAIT_S = 1.0  # how often a wait for a worker checks that it is still alive
QUEUE_DEPTH = 4  # items a worker may have ready before it waits for the caller


@dataclass
class Chunk:
    """Frames of one window derived again: their rows as Arrow (rows.RowsByTable.tables), and, in the
    window's last chunk of each process, the (id, received_at, connection_id) of every frame read
    and the ids of frames carried (text not stored: not derived)."""

    tables: dict[str, list[pa.Table]]
    stored_kinds: pa.Table
    same_kinds: int  # frames whose kind is the one stored: not in the tables (rows.RowsByTable)
    frames: int
    keys: list[pa.RecordBatch] = field(default_factory=list)
    carried: list[int] = field(default_factory=list)


def processes_for(requested: int | None) -> int:
    """How many processes derive: as asked, else one per core (at most 4: the caller's own work,
    reading and comparing, needs a core too)."""
    if requested is not None:
        return max(1, requested)
    if multiprocessing.get_start_method(allow_none=True) not in (None, "fork") or not hasattr(os, "fork"):
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def derive_window(deriver: Deriver, stored: Stored, source: str, low: datetime, high: datetime,
                  shard: tuple[int, int] | None = None) -> Iterator[Chunk]:
    """The frames of [low, high) (of this shard's connections) derived again, in chunks."""
    keys: list[pa.RecordBatch] = []
    carried: list[int] = []
    derived = rows.RowsByTable()
    frames = 0
    mine = None if shard is None else share(stored.connections(source, low, high), shard[1])[shard[0]]
    if mine == []:
        yield Chunk(*derived.tables(), 0)
        return
    add = derived.add
    # Replayed unpacked, not read by name: this runs for every frame.
    for raw_id, stored_kind, raw, records, is_derived in deriver.run(
            prefetch(_tap(stored.frames(source, low, high, connections=mine), keys))):
        if not is_derived:
            carried.append(raw_id)
            continue
        add(raw_id, raw.kind, stored_kind, records)
        frames += 1
        if derived.count >= FLUSH_ROWS:
            yield Chunk(*derived.tables(), frames)
            frames = 0
    yield Chunk(*derived.tables(), frames, keys, carried)


def share(connections: list[tuple[str, int]], n: int) -> list[list[str]]:
    """Connections (id, frames) shared out among n processes, each given the next largest while it
    has the fewest frames: every process computes the same, from the same list."""
    shares: list[list[str]] = [[] for _ in range(n)]
    loads = [0] * n
    for connection, frames in sorted(connections, key=lambda c: (-c[1], c[0])):
        k = loads.index(min(loads))
        shares[k].append(connection)
        loads[k] += frames
    return shares


def _tap(batches: Iterator[pa.RecordBatch], keys: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Pass frames on, keeping (id, received_at, connection_id) of each: old collector events name a
    connection and a time, not a frame, and are matched to their frame with these."""
    for batch in batches:
        keys.append(batch.select(KEYS))
        yield batch


Shard = tuple[int, int] | None  # (this process's number, how many): its share of the connections; None: all
# A job run in each process: yields, per window, progress (frames so far: an int) and then its result.
Job = Callable[[Stored, Shard], Iterator[Any]]


class Shared:
    """A job run by `processes` forked processes, each on its share of each window's connections (1:
    in this process, on all of them). Each yields one result per window, and one at the end."""

    def __init__(self, stored: Stored, job: Job, processes: int, progress: Callable[[int], None] | None = None,
                 *, local: bool | None = None) -> None:
        self.stored, self.job, self.processes = stored, job, processes
        self.progress = progress  # frames so far in the window, over every process
        self.local = processes == 1 if local is None else local  # False: even one process is forked
        self._workers: list[tuple[Any, Any]] = []  # (process, its queue)
        self._local: Iterator[Any] | None = None

    def __enter__(self) -> Shared:
        if self.local:
            self._local = self.job(self.stored, None)
            return self
        context = multiprocessing.get_context("fork")
        for k in range(self.processes):
            results = context.Queue(QUEUE_DEPTH)
            worker = context.Process(target=_work, name=f"replay-derive-{k}", daemon=True,
                                     args=(self.stored, self.job, (k, self.processes), results))
            worker.start()
            self._workers.append((worker, results))
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self._local, "close", None)
        if close is not None:
            close()
        for worker, results in self._workers:
            if worker.is_alive():
                worker.terminate()
            worker.join(timeout=10)
            results.close()
        self._workers.clear()

    def next(self) -> list[Any]:
        """The next result of every process, in process order."""
        local = self._local
        sources: list[Callable[[], Any]] = [local.__next__] if local is not None else [
            partial(_next, worker, results) for worker, results in self._workers]
        counted = [0] * len(sources)
        found = []
        for k, take in enumerate(sources):
            while isinstance(item := take(), int):
                counted[k] = item
                if self.progress is not None:
                    self.progress(sum(counted))
            found.append(item)
        return found


def _next(worker: Any, results: Any) -> Any:
    """A worker's next item. A worker's exception is raised here; one that died without a word is
    reported as such."""
    while True:
        try:
            what, value = results.get(timeout=WAIT_S)
            break
        except queue.Empty:
            if not worker.is_alive():
                raise RuntimeError(f"replay's worker process {worker.name} ended unexpectedly (exit code"
                                   f" {worker.exitcode}); run again with processes=1 to see why") from None
    if what == "error":
        raise value
    return value


def _work(stored: Stored, job: Job, shard: tuple[int, int], results: Any) -> None:
    """A worker process: the job on its share, each item onto `results`."""
    parent = os.getppid()
    try:
        stored = stored.reopened()  # the caller's DuckDB connection is not to be used across a fork
        with quiet_gc():
            for item in job(stored, shard):
                while True:
                    try:
                        results.put(("item", item), timeout=WAIT_S)
                        break
                    except queue.Full:
                        if os.getppid() != parent:  # the caller was killed: nobody will take it
                            results.cancel_join_thread()
                            return
    except BaseException as exc:  # handed to the caller, raised there
        try:
            results.put(("error", exc))
        except Exception:  # not picklable: its text then
            results.put(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        results.close()
        results.join_thread()
