"""`replay --into URL`: a source's stored frames, derived by today's adapters, into another warehouse.

Through the normal writer, exactly once however often it is interrupted: a new run skips, per
connection, the frames the target holds (docs/replay.md, "--into").
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from warehouse.config import FeedConfig, WriterSettings
from warehouse.options import to_table
from warehouse.records import EVENT_CONNECT, CollectorEvent, Quarantine, Record
from warehouse.replay import postgres
from warehouse.replay.compare import Progress, versions_line, when_text
from warehouse.replay.derivation import (
    FRAME_EVENTS,
    Deriver,
    Plan,
    Replayed,
    days,
    load_plan,
    quiet_gc,
    today_versions,
)
from warehouse.replay.shards import Shard, Shared, processes_for
from warehouse.replay.stored import FromPostgres, Stored, prefetch, resolve_range
from warehouse.store import migrate
from warehouse.store.database import data_dir, normalise_url, redact_url
from warehouse.store.writer import Writer

YIELD_EVERY = 64  # frames put between chances for the writer to run (put() does not wait while there is room)
HANDOVER = 1000  # frames derived in a process of its own are handed to the writing side this many at a time
# ... and in the writer's process, this many: each step is a pause for the writer's task (COPY, commit),
# so short steps keep PostgreSQL busy while frames are derived (100: 0.77–1.04 × the writer alone,
# 1,000: 0.62–0.86 ×, 30: 0.70–0.74 ×; two runs, docs/performance.md).
STEP = 100
LIFECYCLE_UNIT = 500  # lifecycle events per writer unit (a unit commits whole)
SPOOL_WAIT_S = 60.0  # an outage of the target: how long the end of a replay waits for it


class ReplayIncomplete(RuntimeError):
    """The target stopped taking rows; what it holds is consistent: run the same replay again."""


@dataclass
class IntoReport:
    source: str
    where: str
    target: str
    start: datetime
    end: datetime
    frames: int = 0  # written
    rows: int = 0  # derived rows written with them
    skipped: int = 0  # the target held them already (an earlier, interrupted run)
    carried: int = 0  # written with their quarantine rows as stored (text not stored: nothing to derive)
    events: int = 0  # lifecycle events copied
    events_skipped: int = 0
    warmed: int = 0
    stored_versions: dict[tuple[str, str | None], int] = field(default_factory=dict)
    today: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The report as `warehouse replay --into` prints it."""
        lines = [f"replay --into {self.target} of {self.source}, frames received {when_text(self.start)} →"
                 f" {when_text(self.end)}, from {self.where}",
                 versions_line(self.stored_versions, self.today),
                 f"wrote {self.frames:,} frames with {self.rows:,} rows derived by today's adapters"
                 + (f" ({self.carried:,} not re-derivable frames with their quarantine rows as stored)"
                    if self.carried else "")
                 + f", and {self.events:,} connection lifecycle events"]
        if self.skipped or self.events_skipped:
            lines.append(f"skipped what the target held already (an earlier run): {self.skipped:,} frames,"
                         f" {self.events_skipped:,} lifecycle events")
        return lines


def into(stored: Stored, target: str, source: str, since: datetime | None = None, until: datetime | None = None,
         entry: FeedConfig | None = None, progress: Progress | None = None,
         writer_settings: WriterSettings | None = None, processes: int | None = None) -> IntoReport:
    """`processes`: 1 derives in this process (the default on fewer than three cores); more, in one
    of its own, so that this one only writes."""
    target = normalise_url(target)
    if isinstance(stored, FromPostgres) and target == normalise_url(stored.url):
        raise ValueError("--into names the database the frames are read from; give another (new, migrated) one")
    migrate.require_current(target)
    start, end = resolve_range(stored, source, since, until)
    plan = load_plan(stored, source, end, entry)
    run = _Rebuild(stored, target, source, since, until, start, end, plan, progress, _deriving(processes))
    # The writer's spool is for outages of a live feed; a replay that cannot write stops, and the
    # next run picks up where the target stands. So a spool of its own, thrown away afterwards
    # (and at the start: a killed run leaves it behind).
    name = re.sub(r"[^\w.-]", "_", source)
    spool = data_dir() / "spool" / f"replay-{name}-{hashlib.sha256(target.encode()).hexdigest()[:12]}"
    shutil.rmtree(spool, ignore_errors=True)
    try:
        with quiet_gc():
            asyncio.run(run.write(replace(writer_settings or WriterSettings(), spool_dir=spool, spool_fsync=False)))
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    report = run.report
    report.warmed = run.warmed
    report.stored_versions = dict(run.versions)
    report.today = today_versions(kind for kind, _ in run.versions)
    return report


def _deriving(requested: int | None) -> int:
    """2: derive in a process of its own, beside the writer's; 1: in the writer's process. Forking
    pays only where a core is left over: handing the records over costs ~12 µs of CPU a frame
    (pickling both ways), and the writer's process and PostgreSQL keep two cores busy already. On
    two cores it was 0.51 × the writer alone forked, 0.74 × in one process (docs/performance.md)."""
    if requested is not None:
        return min(processes_for(requested), 2)
    return 2 if processes_for(None) >= 3 else 1


class _Rebuild:
    def __init__(self, stored: Stored, target: str, source: str, since: datetime | None, until: datetime | None,
                 start: datetime, end: datetime, plan: Plan, progress: Progress | None, processes: int) -> None:
        self.stored, self.target, self.source = stored, target, source
        self.since, self.start, self.end = since, start, end
        # The lifecycle of the range asked for: without --since from the start, without --until to
        # the end (the disconnect after the last frame, a reconnect attempt that came to nothing).
        self.events_end = until or postgres.END_OF_TIME
        self.plan = plan  # what derives each connection (deriving: _derive's own Deriver)
        self.processes = processes
        self.versions: Counter[tuple[str, str | None]] = Counter()  # as the deriving counted them
        self.warmed = 0
        self.progress = progress
        self.report = IntoReport(source, stored.where, redact_url(target), start, end)

    async def write(self, settings: WriterSettings) -> None:
        # Deriving in a process of its own where there is a second core: this one then only writes.
        # One deriving process keeps every connection's frames in order (the target holds, per
        # connection, the frames up to some seq: what an interrupted run skips). It forks first,
        # before this process starts a thread of its own.
        local = self.processes == 1
        with Shared(self.stored, self._derive, 1, local=local) as deriving:
            target, source = self.target, self.source
            await asyncio.to_thread(postgres.ensure_partitions, target, self.start.astimezone(UTC).date(),
                                    (self.end - self.start).days + 2)
            held, events_held = await asyncio.to_thread(postgres.written, target, source, self.start, self.end,
                                                        self.events_end)
            lifecycle = await asyncio.to_thread(self.stored.lifecycle, source, self.since, self.events_end,
                                                FRAME_EVENTS)
            async with Writer(target, settings, name=f"replay-{source}") as writer:
                await self._lifecycle(writer, lifecycle, events_held)
                while True:
                    what, value = deriving.next()[0] if local else (await asyncio.to_thread(deriving.next))[0]
                    if what == "frames":
                        await self._frames(writer, value, held)
                    elif what == "window":
                        low, opened = value
                        if self.since is not None:  # connections that began before the range: their connects too
                            earlier = [c.event(source) for _, c in opened
                                       if c is not None and c.received_at < self.since]
                            await self._lifecycle(writer, earlier, events_held)
                        if self.progress:
                            self.progress(low, self.report.frames + self.report.skipped)
                    else:
                        self.versions, self.warmed = value
                        break
                await writer.flush()
                if not await writer.wait_replayed(SPOOL_WAIT_S) or writer.stats.dropped:
                    raise ReplayIncomplete(f"the database {redact_url(target)} stopped taking rows"
                                           f" ({writer.stats.last_error}); what it holds is consistent: run the same"
                                           " replay again once it is back")

    def _derive(self, stored: Stored, shard: Shard) -> Iterator[tuple[str, Any]]:
        """The range's frames derived (in this process or a forked one): ("frames", a list of
        Replayed) in order, ("window", (its start, the connections first met in it)) after each
        window, and ("done", (connections per adapter version, frames warmed)) at the end."""
        deriver = Deriver(stored, self.plan)
        step = STEP if shard is None else HANDOVER  # None: in the writer's process
        for low, high in days(self.start, self.end):
            batch: list[Replayed] = []
            for frame in deriver.run(prefetch(stored.frames(self.source, low, high))):
                batch.append(frame)
                if len(batch) == step:
                    yield "frames", batch
                    batch = []
            if batch:
                yield "frames", batch
            opened, deriver.opened = deriver.opened, []
            yield "window", (low, opened)
        yield "done", (deriver.plan.versions, deriver.warmed)

    async def _lifecycle(self, writer: Writer, events: list[CollectorEvent], held: Counter[Any]) -> None:
        """Copy what the target does not hold yet; a connect event says which adapter derived the rows now."""
        todo: list[Record] = []
        for event in events:
            key = (event.received_at, event.connection_id, event.event)
            if held[key]:
                held[key] -= 1
                self.report.events_skipped += 1
                continue
            if event.event == EVENT_CONNECT and event.connection_id is not None:
                event = self._described(event)
            todo.append(event)
        for i in range(0, len(todo), LIFECYCLE_UNIT):
            await writer.put(None, todo[i:i + LIFECYCLE_UNIT])
        self.report.events += len(todo)

    def _described(self, connect: CollectorEvent) -> CollectorEvent:
        """The connect event as the target should have it: what derives this connection's rows there
        (today's version; the kind and options, also for events from before they were recorded)."""
        detail = dict(connect.detail) if isinstance(connect.detail, dict) else {}
        assert connect.connection_id is not None
        feed, options, _ = self.plan.resolve(str(connect.connection_id), connect.received_at)
        detail["replayed"] = {"adapter_version_collected": detail.get("adapter_version"),
                              "at": datetime.now(UTC).isoformat()}
        detail |= {"feed_kind": feed.kind, "adapter_version": feed.version}
        detail.setdefault("options", to_table(options))
        return connect._replace(detail=detail)

    async def _frames(self, writer: Writer, replayed: Iterable[Replayed], held: dict[str, int]) -> None:
        report = self.report
        carried: list[Replayed] = []
        put = 0
        for frame in replayed:
            raw = frame.raw
            if held and raw.seq <= held.get(str(raw.connection_id), 0):  # (a fresh target holds none)
                report.skipped += 1
                continue
            if not frame.derived:
                carried.append(frame)  # written with its stored quarantine rows, below, in order
                continue
            if carried:
                await self._carry(writer, carried)
            await writer.put(raw, frame.records)
            report.frames += 1
            report.rows += len(frame.records)
            put += 1
            if put % YIELD_EVERY == 0:
                await asyncio.sleep(0)
                if writer.spool_backlog_batches and not writer.stats.database_up:
                    raise ReplayIncomplete(f"the database {redact_url(writer.url)} went away"
                                           f" ({writer.stats.last_error}); what it holds is consistent: run the same"
                                           " replay again once it is back")
        if carried:
            await self._carry(writer, carried)

    async def _carry(self, writer: Writer, carried: list[Replayed]) -> None:
        """Frames without their text: raw row and quarantine rows as stored (one read for a run of them)."""
        found: dict[int, list[Quarantine]] = {}
        for raw_id, row in await asyncio.to_thread(self.stored.quarantined, [f.raw_id for f in carried]):
            found.setdefault(raw_id, []).append(row)
        for frame in carried:
            rows: list[Record] = list(found.get(frame.raw_id, []))
            await writer.put(frame.raw, rows)
            self.report.frames += 1
            self.report.carried += 1
            self.report.rows += len(rows)
        carried.clear()
