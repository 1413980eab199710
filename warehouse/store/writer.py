"""The writer: records from any number of producers → batched COPY transactions → PostgreSQL.

A *unit* is one raw frame plus the records derived from it (or records with no frame, such as a
collector event). Units travel through one bounded queue, so order is kept (per connection and
overall) and producers wait when the database falls behind instead of memory growing.

Each batch is one transaction: raw frames (with ids reserved from a block sequence), then the
derived rows pointing at them, then a row in `ingest_batches` carrying the batch id. A writer that
falls behind keeps PostgreSQL busy: the next batch's rows go on a second connection while the batch
before commits on the first, and its COMMIT waits for that one's outcome (`_overlapped`), so batches
are committed, spooled and replayed in the order they were taken, as on one connection.

Failure handling, by kind:
- *Data problems* (a record of the wrong type, text PostgreSQL refuses): the batch is bisected
  until the bad unit is alone; the others commit, the bad unit's records are refused with a
  one-line error and a `quarantine` row (its raw frame is still stored), nothing else is lost.
- *Everything else* (connection lost, server shutting down, permission or schema errors): the
  batch goes to the on-disk spool, as does every later batch until the spool has been replayed,
  in order. Batch ids make the replay exactly-once: an id already in `ingest_batches` is skipped,
  and the halves of a bisected batch get ids derived from their parent, so a replay bisects the
  same way and skips the halves that had committed.

Frames received under a claim carry its epoch (`Fencing`, set by the collector's claims); a batch's
commit checks them in the same round trip as its COMMIT, and a batch whose feed has passed on to
another process is stored by the late rules of `store/fence.py` (docs/claims.md).

The connection (connect, outages, partitions, raw ids) is `store/connection.py`; the way back from
the spool, `store/spoolreplay.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4, uuid5

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from warehouse.config import WriterSettings
from warehouse.records import (
    EVENT_DROPPED,
    TABLE_OF,
    CollectorEvent,
    Quarantine,
    RawMessage,
    Record,
)
from warehouse.store import fence
from warehouse.store.connection import WriterConnection, one_line
from warehouse.store.database import normalise_url
from warehouse.store.engine import store_engine
from warehouse.store.fence import Fenced, Fencing
from warehouse.store.homes import adopt_legacy_spool, spool_root
from warehouse.store.spool import Spool, SpooledConnection, Unit, UnusableSpool
from warehouse.store.spoolcodec import Epochs
from warehouse.store.spoolreplay import SpoolReplayer

log = logging.getLogger("warehouse.writer")

# What each COPY names: the raw frames with the ids reserved for them, derived rows with their frame's id.
# The id goes last: `row + (id,)` makes the tuple to send in one step (unpacking into a new tuple costs
# twice as much, for every row).
COPY_COLUMNS: dict[type, tuple[str, ...]] = {
    RawMessage: (*RawMessage._fields, "id"), **{cls: (*cls._fields, "raw_id") for cls in TABLE_OF}}

# Errors that mean "this data cannot be stored as it is", as opposed to "the database is not
# available right now". Client-side encoding raises TypeError/ValueError/OverflowError.
DATA_ERRORS = (
    TypeError, ValueError, OverflowError,
    asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError,
)
LATE_ATTEMPTS = 5  # a late batch is planned again when yet another takeover moved an epoch meanwhile


class WriterClosedError(RuntimeError):
    pass


@dataclass
class InFlight:
    """A batch committing in a task of its own, on one of the writer's connections. `fast`: True once it
    committed as sent, False as soon as it will not (it then takes the one-connection way, which may need
    locks the batch after it holds: that one leaves its transaction first)."""

    task: asyncio.Task[None]
    conn: asyncpg.Connection
    fast: asyncio.Future[bool]


@dataclass
class WriterStats:
    frames: int = 0  # raw frames committed
    rows: int = 0  # derived rows committed
    batches: int = 0  # transactions committed
    refused: int = 0  # units whose derived records were refused (quarantined)
    dropped: int = 0  # units that could not be stored or spooled at all
    spooled_batches: int = 0
    replayed_batches: int = 0
    database_up: bool = False
    database_reached: bool = False  # ever, since the writer started: if not, the URL may well be wrong
    outages: int = 0  # times the database went away (or could not be reached at the start)
    last_error: str | None = None
    dropped_by_source: Counter[str] = field(default_factory=Counter)


class Writer:
    """Append records to PostgreSQL. Use as `async with Writer(url) as writer: await writer.put(...)`."""

    def __init__(self, url: str, settings: WriterSettings | None = None, *, name: str = "collector",
                 on_commit: Callable[[list[Unit]], None] | None = None, engine: AsyncEngine | None = None) -> None:
        self.url = normalise_url(url)
        self.on_commit = on_commit  # e.g. metrics: called with the units of every committed batch
        self.settings = settings or WriterSettings()
        self.name = name
        self.stats = WriterStats()
        # Items: (units of one source, source, epoch), a flush's future, or None (stop). Bounded in
        # units, not items (put_many's items hold many): `_queued` counts them, producers wait for room.
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queued = 0
        self._room: list[asyncio.Future[None]] = []  # producers waiting for the queue to take more
        # The process's one engine (store/engine.py): given, or the writer's own (disposed on close).
        self._own_engine = engine is None
        self.engine = engine or store_engine(self.url, connect_timeout_s=self.settings.connect_timeout_s)
        self._connection = WriterConnection(self.url, self.engine, self.settings, self.stats, self.spool_dir)
        self._spool: Spool | UnusableSpool | None = None
        self._replayer: SpoolReplayer | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.fencing = Fencing()
        # Units of claimed frames not stored yet (queued, batched or spooled), per (source, epoch):
        # what tells the claims that a lost epoch's late frames are all in.
        self.unstored: Counter[tuple[str, int]] = Counter()
        self._carry: Any = None  # a unit that did not fit the last batch (another epoch of its source)
        self._inflight: InFlight | None = None  # the batch committing while the next is taken

    # -- public API ----------------------------------------------------------------------------

    async def start(self) -> Writer:
        spool_dir = self.spool_dir
        try:
            if self.settings.spool_dir is None:
                adopt_legacy_spool(spool_dir)
            self._spool = Spool(spool_dir, fsync=self.settings.spool_fsync)
        except OSError as exc:  # collecting without a safety net beats not collecting at all
            log.error("writer: cannot use the spool directory %s (%s); collecting without a spool: frames that"
                      " arrive while the database is unreachable will be lost and counted; fix the directory"
                      " and restart", spool_dir, exc.strerror or exc)
            self._spool = UnusableSpool(spool_dir, exc)
        self.unstored.update(self._spool.pending_units)
        if self._spool.pending:
            log.warning(
                "%d batches left in the spool %s by an earlier run: replaying them first",
                self._spool.pending_batches, spool_dir,
            )
        self._replayer = SpoolReplayer(self._spool, self._connection, self._write_spooled, self.name)
        await self._connection.ensure()
        self._task = asyncio.create_task(self._run(), name=f"writer-{self.name}")
        return self

    async def __aenter__(self) -> Writer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def put(self, raw: RawMessage | None, rows: Sequence[Record] = ()) -> None:
        """Queue one frame and its derived records; waits while the queue is full (backpressure)."""
        await self.put_many([(raw, rows)])

    async def put_many(self, units: Sequence[Unit]) -> None:
        """Queue frames of one source, each with its derived records, in order: one queue item for as
        many as there is room for; waits while the queue is full (backpressure)."""
        if self._closing:
            raise WriterClosedError("writer is closed")
        if self._task is not None and self._task.done():
            raise WriterClosedError(f"writer stopped: {self.stats.last_error}")
        if not units:
            return
        # The epoch the frames were received under: read now, before any wait for room in the queue.
        raw, rows = units[0]
        source = raw.source if raw is not None else rows[0].source if rows else None
        epoch = self.fencing.epochs.get(source) if source is not None else None
        if source is not None and epoch is not None:
            self.unstored[source, epoch] += len(units)
        limit = self.settings.queue_units
        try:
            while units:
                while self._queued >= limit:
                    room = asyncio.get_running_loop().create_future()
                    self._room.append(room)
                    await room
                if self._task is not None and self._task.done():
                    raise WriterClosedError(f"writer stopped: {self.stats.last_error}")
                fits = limit - self._queued
                item, units = (units, ()) if len(units) <= fits else (units[:fits], units[fits:])
                self._queued += len(item)
                self._queue.put_nowait((item, source, epoch))
        except BaseException:  # cancelled or closed while waiting for room: what was not queued is not pending
            if source is not None and epoch is not None:
                self.unstored[source, epoch] -= len(units)
            raise

    def _taken(self, count: int) -> None:
        """`count` units left the queue for a batch: wake the producers waiting for room."""
        self._queued -= count
        if self._room:
            rooms, self._room = self._room, []
            for room in rooms:
                if not room.done():
                    room.set_result(None)

    def pending(self, source: str, epoch: int) -> int:
        """Units of `source` received under `epoch` that are not stored yet (queued, batched or spooled)."""
        return self.unstored[source, epoch]

    async def flush(self) -> None:
        """Return once everything put so far is committed or safely spooled."""
        done = asyncio.get_running_loop().create_future()
        await self._queue.put(done)
        await done

    async def wait_replayed(self, timeout: float) -> bool:
        """Wait (up to `timeout` s) until nothing is left in the spool; True if it emptied."""
        deadline = time.monotonic() + timeout
        if self._task is not None and not self._task.done():
            await self.flush()
        return self._replayer is None or await self._replayer.drained(deadline - time.monotonic())

    @property
    def connections_open(self) -> int:
        """The writer's open database connections: 0 while it is away, 2 once a batch was sent while another
        committed (the second stays open until the next outage)."""
        return self._connection.open

    @property
    def queued(self) -> int:
        """Units (frames with their rows, events) waiting in the queue."""
        return self._queued

    def spooled_event_ids(self) -> dict[str, tuple[str, int]]:
        """Per source, the newest SSE event id waiting in the spool (newer than any in the database)
        and the claim epoch it was received under (0: before claims)."""
        return dict(self._spool.last_event_ids) if self._spool else {}

    def spooled_connections(self) -> dict[UUID, SpooledConnection]:
        """The feed connections whose frames or events an earlier run left in the spool (replayed before
        anything of this run): whether each ended there, and when it was last heard of."""
        return dict(self._spool.connections) if self._spool else {}

    @property
    def spool_id(self) -> UUID | None:
        """The identity of the spool directory this writer owns (None without a usable spool)."""
        return self._spool.id if self._spool else None

    @property
    def spool_backlog_batches(self) -> int:
        return self._spool.pending_batches if self._spool else 0

    @property
    def spool_backlog_frames(self) -> dict[str, int]:
        """Per source, the frames waiting in the spool."""
        return dict(self._spool.pending_frames) if isinstance(self._spool, Spool) else {}

    @property
    def spool_bytes(self) -> int:
        return self._spool.size_bytes() if isinstance(self._spool, Spool) else 0

    @property
    def spool_dir(self) -> Path:
        """Where this writer spools: the settings' directory, else <data dir>/spool/<database>/<writer name>."""
        return self.settings.spool_dir or spool_root(self.url) / self.name

    async def close(self, timeout: float = 30.0) -> None:
        """Flush everything: commit what the database takes, spool the rest. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._task is not None and not self._task.done():
            await self._queue.put(None)
            await self._task
        await self._settle()
        if self._spool is not None and self._spool.pending and self.stats.database_up:
            await self.wait_replayed(timeout)
        if self._replayer is not None:
            await self._replayer.stop()
        if self._spool is not None:
            if self._spool.pending:
                log.warning(
                    "%d batches remain in the spool %s; they are replayed when the writer next starts",
                    self._spool.pending_batches, self._spool.directory,
                )
            self._spool.close()
        await self._connection.close()
        if self._own_engine:
            await self.engine.dispose()

    # -- main loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._spool is not None and self._replayer is not None
        stop = False
        while not stop:
            # Units that queued up during the last commit have waited long enough: they go at once.
            behind = not self._queue.empty() or self._carry is not None
            if self._carry is not None:  # the unit that began another epoch goes first
                first, self._carry = self._carry, None
                if self._spool.pending:
                    await self._replay()
            elif self._spool.pending:
                # Keep replaying even when producers are idle.
                await self._replay()
                try:
                    first = await asyncio.wait_for(self._queue.get(), self.settings.retry_initial_s)
                except TimeoutError:
                    continue
            else:
                first = await self._queue.get()
            units, epochs, waiters, stop = await self._next_batch(first, wait=not behind)
            if units:
                try:
                    await self._handle(units, epochs)
                except Exception as exc:  # a bug must not lose data or stop the collector
                    log.exception("writer: unexpected error; spooling the batch")
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    await self._settle()
                    self._spool_batch(uuid4(), units, epochs)
            if waiters or stop:
                await self._settle()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _next_batch(self, item: Any, *,
                          wait: bool) -> tuple[list[Unit], Epochs, list[asyncio.Future[None]], bool]:
        """Gather units until the batch is full, a flush/stop arrives, a unit was received under another
        epoch of its source than the batch's (it starts the next batch), or the queue is empty and the
        batch committing meanwhile is done, or, none committing, `wait` is False or the flush interval
        has passed."""
        queue = self._queue
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.flush_interval_s
        units: list[Unit] = []
        epochs: Epochs = {}
        waiters: list[asyncio.Future[None]] = []
        rows = 0
        while True:
            if item is None:
                return units, epochs, waiters, True
            if isinstance(item, asyncio.Future):
                waiters.append(item)
                return units, epochs, waiters, False
            chunk, source, epoch = item
            if epoch is not None and epochs.setdefault(source, epoch) != epoch:
                self._carry = item
                return units, epochs, waiters, False
            self._taken(len(chunk))
            units.extend(chunk)
            rows += len(chunk)
            for _raw, derived in chunk:
                rows += len(derived)
            if rows >= self.settings.batch_rows:
                return units, epochs, waiters, False
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                committing = self._inflight.task if self._inflight is not None else None
                if committing is not None and not committing.done():
                    # What queues up while a batch commits goes once that one is done, as on one connection.
                    item, wait = await _next_or_done(queue, committing), False
                    if item is _DONE:
                        return units, epochs, waiters, False
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or not wait:
                    return units, epochs, waiters, False
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return units, epochs, waiters, False

    async def _handle(self, units: list[Unit], epochs: Epochs) -> None:
        """Commit a batch, or spool it: while the database is away, and while older batches wait in
        the spool (order is kept)."""
        batch_id = uuid4()
        assert self._spool is not None and self._replayer is not None
        if await self._overlap(batch_id, units, epochs):
            return
        await self._settle()
        if self._spool.pending or not await self._connection.ensure():
            self._spool_batch(batch_id, units, epochs)
            await self._replayer.start()
            return
        if not await self._write(batch_id, units, epochs, maybe_committed=False):
            self._spool_batch(batch_id, units, epochs)
            return
        if self.stats.dropped_by_source:
            await self._record_dropped()

    async def _overlap(self, batch_id: UUID, units: list[Unit], epochs: Epochs) -> bool:
        """Start committing the batch in a task of its own (`_overlapped`), on the connection that the batch
        before, if it is still committing, does not use; return once that batch is done, so that at most
        two are under way. False: the batch goes the one-connection way (one connection configured, the
        spool not empty, a feed in a handover's watch, the database away)."""
        assert self._spool is not None
        if (self.settings.connections < 2 or self._spool.pending or self.stats.dropped_by_source
                or self.fencing.watched.intersection(epochs) or not await self._connection.ensure()):
            return False
        previous = self._inflight if self._inflight is not None and not self._inflight.task.done() else None
        conn = await self._connection.other(previous.conn if previous else None)
        if conn is None:
            return False
        try:  # here, not in the task: a day's partitions made once, and ids growing in the order of the batches
            conn = await self._connection.ready(conn)
            ids = await self._connection.reserve_ids(conn, sum(raw is not None for raw, _rows in units))
        except Exception as exc:  # the one-connection way meets the error again, and deals with it
            log.debug("writer: preparing a batch for the second connection failed (%s)", one_line(str(exc)))
            return False
        fast = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._overlapped(batch_id, units, epochs, conn, ids, previous, fast),
                                   name=f"writer-{self.name}-batch")
        self._inflight = InFlight(task, conn, fast)
        if previous is not None:
            await asyncio.wait({previous.task})
        return True

    async def _overlapped(self, batch_id: UUID, units: list[Unit], epochs: Epochs, conn: asyncpg.Connection,
                          ids: Iterator[int], before: InFlight | None, fast: asyncio.Future[bool]) -> None:
        """One batch on `conn`: its rows sent at once, its COMMIT once the batch `before` committed as sent.
        Otherwise — `before` did not, or something here failed — it leaves its transaction, waits for
        `before` to be done, and takes the one-connection way (`_write`: bisected, planned late) or goes
        to the spool behind `before`: the order holds, and no transaction of ours is open while `before`
        commits its way (it may need the locks this one's COPY took: a new partition or chunk)."""
        failed: BaseException | None = None
        try:
            try:
                async with asyncio.timeout(self.settings.statement_timeout_s):
                    await conn.execute("BEGIN")
                    plan = await fence.plan(conn, self.fencing, units, epochs, None)  # no round trip: none watched
                    frames, row_count = await self._copy(conn, plan.units, ids)
            except Exception as exc:
                failed = exc
            assert self._spool is not None
            if failed is None and (before is None or await before.fast) and not self._spool.pending:
                try:
                    async with asyncio.timeout(self.settings.statement_timeout_s):
                        _confirmed(await conn.execute(_commit_message(plan, batch_id, frames, row_count)))
                except Exception as exc:
                    failed = exc
                else:
                    self._committed(plan, frames, row_count)
                    self._done(units, epochs)
                    fast.set_result(True)
                    return
            fast.set_result(False)
            if failed is not None and not isinstance(failed, DATA_ERRORS) and not fence.is_fenced(failed):
                # The database went away (a COMMIT whose answer was lost may have landed: the batch's id in
                # ingest_batches tells the replay).
                await self._connection.went_down(failed)
                usable = False
            else:
                usable = await self._rolled_back(conn)
            if before is not None:
                await asyncio.wait({before.task})
            if usable and not self._spool.pending and await self._write(batch_id, units, epochs,
                                                                        maybe_committed=False, conn=conn):
                return
            self._spool_batch(batch_id, units, epochs)
        except Exception as exc:  # a bug must not lose data or stop the collector
            log.exception("writer: unexpected error; spooling the batch")
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if not conn.is_closed() and conn.is_in_transaction():
                conn.terminate()  # its rows must not ride along with the next batch's COMMIT
            if before is not None:
                await asyncio.wait({before.task})
            self._spool_batch(batch_id, units, epochs)
        finally:
            if not fast.done():
                fast.set_result(False)

    async def _rolled_back(self, conn: asyncpg.Connection) -> bool:
        """`conn` out of its transaction, ready for the next; False if it went away."""
        if conn.is_closed():
            return False
        try:
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
        except Exception as exc:
            await self._connection.went_down(exc)
            return False
        return True

    async def _replay(self) -> None:
        """Replay the spool (in a task of its own), once the batch committing here, if any, is done: the
        replay uses the first connection, and comes after that batch."""
        assert self._replayer is not None
        await self._settle()
        await self._replayer.start()

    async def _settle(self) -> None:
        """Wait for the batch committing in a task of its own, if any (it never raises)."""
        if self._inflight is not None:
            await asyncio.wait({self._inflight.task})
            self._inflight = None

    def _spool_batch(self, batch_id: UUID, units: list[Unit], epochs: Epochs) -> None:
        assert self._spool is not None
        try:
            self._spool.append(batch_id, units, epochs)
            self.stats.spooled_batches += 1
        except OSError as exc:
            # Nothing left to keep the data in: count it per source, say so once per batch, go on.
            self._count_dropped(units, epochs)
            log.error(
                "writer: cannot spool to %s (%s): %d frames lost; free disk space or fix permissions",
                self._spool.directory, exc.strerror or exc, len(units),
            )
        except (TypeError, ValueError) as exc:  # a value no spool format can hold: a bug, counted, never a crash
            self._count_dropped(units, epochs)
            log.error("writer: a batch of %d frames cannot be spooled (%s); they are lost", len(units), exc)

    def _count_dropped(self, units: list[Unit], epochs: Epochs) -> None:
        self.stats.dropped += len(units)
        for raw, rows in units:  # a unit without a frame (an event) counts for its records' source
            self.stats.dropped_by_source[raw.source if raw else rows[0].source if rows else "-"] += 1
        self._done(units, epochs)

    def _done(self, units: list[Unit], epochs: Epochs) -> None:
        """These units are stored, or given up: none of them is pending any more."""
        if not epochs:
            return
        for source, count in self.fencing.sources_of(units).items():
            if source in epochs:
                self.unstored[source, epochs[source]] -= count
        self.unstored = +self.unstored

    async def _record_dropped(self) -> None:
        """Make frames that could not be kept visible as `dropped` collector events."""
        now = datetime.now(UTC)
        lost, self.stats.dropped_by_source = self.stats.dropped_by_source, Counter()
        events = [
            CollectorEvent(now, src, None, EVENT_DROPPED, {"frames": n, "reason": "spool not writable"})
            for src, n in lost.items()
        ]
        if not await self._write(uuid4(), [(None, events)], {}, maybe_committed=False):
            self.stats.dropped_by_source.update(lost)

    # -- writing -------------------------------------------------------------------------------

    async def _write_spooled(self, batch_id: UUID, units: list[Unit], epochs: Epochs) -> bool:
        """The replay's write: a spooled batch may have been committed before (its COMMIT's answer lost)."""
        if await self._write(batch_id, units, epochs, maybe_committed=True):
            self.stats.replayed_batches += 1
            return True
        return False

    async def _write(self, batch_id: UUID, units: list[Unit], epochs: Epochs, *, maybe_committed: bool,
                     conn: asyncpg.Connection | None = None) -> bool:
        """Commit `units` (on `conn`, else the first connection), isolating bad ones by bisection; False if
        the database went away first."""
        todo: list[tuple[UUID, list[Unit]]] = [(batch_id, units)]
        while todo:
            chunk_id, chunk = todo.pop(0)
            try:
                if maybe_committed and await self._is_committed(chunk_id, conn):
                    continue
                await self._commit(chunk_id, chunk, epochs, conn)
                continue
            except DATA_ERRORS as exc:
                refused: BaseException = exc
            except Exception as exc:
                await self._connection.went_down(exc)
                return False
            if len(chunk) > 1:
                half = len(chunk) // 2
                todo[:0] = [(uuid5(chunk_id, "a"), chunk[:half]), (uuid5(chunk_id, "b"), chunk[half:])]
                continue
            # Outside the handler: the database going away while a refusal is stored is an outage like
            # any other (the batch is spooled under its id; the halves' and attempts' ids are derived
            # from it, so what did commit is skipped on replay).
            try:
                await self._refuse(chunk_id, chunk[0], refused, epochs, maybe_committed, conn)
            except Exception as exc:
                await self._connection.went_down(exc)
                return False
        self._done(units, epochs)
        return True

    async def _commit(self, batch_id: UUID, units: list[Unit], epochs: Epochs,
                      conn: asyncpg.Connection | None) -> None:
        """One transaction per batch, marked by its id (the path of every batch but those `_overlapped`
        commits as they were sent). A batch the fence refuses (its feed passed on meanwhile) is planned
        again as late."""
        epochs = {s: e for s, e in epochs.items() if any(self.fencing.source_of(u) == s for u in units)}
        current = None
        for _attempt in range(LATE_ATTEMPTS):
            try:
                await self._commit_planned(batch_id, units, epochs, current, conn)
                return
            except Fenced:
                current = await fence.current_claims(await self._connection.ready(conn), list(epochs))
        raise ConnectionError(f"the claims of {', '.join(epochs)} kept moving on while a batch was committed")

    async def _commit_planned(self, batch_id: UUID, units: list[Unit], epochs: Epochs,
                              current: dict[str, tuple[int, list[Any]]] | None,
                              conn: asyncpg.Connection | None) -> None:
        conn = await self._connection.ready(conn)
        # A TimeoutError (hung server, dead TCP peer) takes the outage path: the connection is
        # dropped and the batch spooled; its id makes the replay safe if the COMMIT did land.
        async with asyncio.timeout(self.settings.statement_timeout_s):
            await conn.execute("BEGIN")
            try:
                plan = await fence.plan(conn, self.fencing, units, epochs, current)
                frames, row_count = await self._copy(conn, plan.units)
                _confirmed(await conn.execute(_commit_message(plan, batch_id, frames, row_count)))
            except (*DATA_ERRORS, asyncpg.PostgresError) as exc:
                # The connection stays for the bisection or the late plan: end the failed transaction.
                # (Any other error drops the connection, and the server ends the transaction with it.)
                if not isinstance(exc, DATA_ERRORS) and not fence.is_fenced(exc):
                    raise
                if conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                if fence.is_fenced(exc):
                    raise Fenced(str(exc)) from None
                raise
        self._committed(plan, frames, row_count)

    def _committed(self, plan: fence.Plan, frames: int, row_count: int) -> None:
        self.fencing.committed(plan)
        self.stats.frames += frames
        self.stats.rows += row_count
        self.stats.batches += 1
        if self.on_commit is not None:
            self.on_commit(plan.units)

    async def _copy(self, conn: asyncpg.Connection, units: list[Unit],
                    ids: Iterator[int] | None = None) -> tuple[int, int]:
        """COPY the units' raw frames (with the ids given, else reserved now) and derived rows."""
        raw_rows: list[tuple[Any, ...]] = []
        derived: defaultdict[type[Record], list[tuple[Any, ...]]] = defaultdict(list)
        frames = sum(1 for raw, _ in units if raw is not None)
        if ids is None:
            ids = await self._connection.reserve_ids(conn, frames)
        row_count = 0
        no_id: tuple[int | None] = (None,)
        try:
            for raw, rows in units:
                raw_id = no_id
                if raw is not None:
                    raw_id = (next(ids),)
                    raw_rows.append(raw + raw_id)
                for row in rows:
                    derived[type(row)].append(row + raw_id)
                row_count += len(rows)
        except TypeError:  # something that is no tuple
            derived = defaultdict(list, ((type(row), []) for _raw, rows in units for row in rows))
            if all(record_type in TABLE_OF for record_type in derived):
                raise
        unknown = [record_type for record_type in derived if record_type not in TABLE_OF]
        if unknown:
            raise TypeError(f"not a record type: {unknown[0].__name__}")
        if raw_rows:
            await conn.copy_records_to_table("raw_messages", records=raw_rows, columns=COPY_COLUMNS[RawMessage])
        for record_type, rows in derived.items():
            await conn.copy_records_to_table(TABLE_OF[record_type], records=rows, columns=COPY_COLUMNS[record_type])
        return frames, row_count

    async def _refuse(self, chunk_id: UUID, unit: Unit, exc: BaseException, epochs: Epochs,
                      maybe_committed: bool, conn: asyncpg.Connection | None) -> None:
        """Store what can be stored of a unit whose records were refused, plus a quarantine row."""
        raw, rows = unit
        source = raw.source if raw is not None else _source_of(rows)
        reason = one_line(f"{_record_names(rows)} refused: {type(exc).__name__}: {exc}")
        log.error("writer: %s (source %s)", reason, source)
        self.stats.refused += 1
        for n, attempt in enumerate(_refusal_attempts(raw, rows, str(source), reason)):
            attempt_id = uuid5(chunk_id, f"refused-{n}")
            try:
                if maybe_committed and await self._is_committed(attempt_id, conn):
                    return
                await self._commit(attempt_id, [attempt], epochs, conn)
                return
            except DATA_ERRORS:
                continue
        self.stats.dropped += 1
        log.error("writer: a %s from source %s could not be stored in any form; dropped",
                  _record_names(rows), source)

    async def _is_committed(self, batch_id: UUID, conn: asyncpg.Connection | None) -> bool:
        conn = await self._connection.ready(conn)
        return bool(await conn.fetchval("SELECT 1 FROM ingest_batches WHERE batch_id = $1", batch_id))


_DONE = object()


async def _next_or_done(queue: asyncio.Queue[Any], task: asyncio.Task[None]) -> Any:
    """The queue's next item, or _DONE if `task` ends first."""
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        return getter.result()
    getter.cancel()  # an item it was woken for stays in the queue (asyncio.Queue.get)
    return _DONE


def _commit_message(plan: fence.Plan, batch_id: UUID, frames: int, row_count: int) -> str:
    """The fence, the batch marker and COMMIT: one round trip (no lock outlives the message; the values
    are ours: names quoted, a UUID, integers)."""
    return (f"{plan.sql()}INSERT INTO ingest_batches (batch_id, frames, rows)"
            f" VALUES ('{batch_id}', {frames:d}, {row_count:d}); COMMIT")


def _confirmed(status: object) -> None:
    """A commit message's answer must be PostgreSQL's COMMIT. ROLLBACK (the transaction had failed unseen) or
    no answer at all (asyncpg ends a call with None when its connection closes under it, as another batch's
    outage closes both) is no commit: the batch takes the outage path, and its id tells the replay whether it
    landed (docs/reliability.md, "Open: a batch counted committed and missing after a crash")."""
    if status != "COMMIT":
        raise ConnectionError(f"the batch's COMMIT was answered {status!r}, not COMMIT: it is spooled")


def _refusal_attempts(raw: RawMessage | None, rows: Sequence[Any], source: str, reason: str) -> list[Unit]:
    """What to try to store for a refused unit, best first: the frame as it is, then the frame
    with a null payload (when the frame itself is what PostgreSQL refuses), then only the reason."""
    now = datetime.now(UTC)
    connection = raw.connection_id if raw is not None else None

    def quarantine(frame: str | None) -> list[Any]:
        return [Quarantine(now, source, connection, reason, frame)]

    attempts: list[Unit] = []
    text = None
    if raw is not None:
        text = raw.payload.decode("utf-8", "replace") if raw.payload is not None else None
        attempts.append((raw, quarantine(text)))
        attempts.append((raw._replace(payload=None), quarantine(_escape_nul(text))))
    # A frame the database refuses whole (a received_at outside its window: a clock that lost its time)
    # still leaves its text in the quarantine row; records without a frame leave theirs.
    attempts.append((None, quarantine(_escape_nul(text if text is not None else repr(list(rows))[:10_000]))))
    return attempts


def _escape_nul(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; escaping keeps the character visible instead of losing it."""
    return None if text is None else text.replace("\x00", "\\u0000")


def _record_names(rows: Sequence[Any]) -> str:
    names = sorted({type(r).__name__ for r in rows})
    return "/".join(names) or "raw frame"


def _source_of(rows: Sequence[Any]) -> str:
    for row in rows:
        source = getattr(row, "source", None)
        if isinstance(source, str):
            return source
    return "unknown"
