"""A collector process: the writer, the claims, a loop per feed (stand by, take its claim, collect
until it is lost), signals, reloads, and the bookkeeping of a takeover — where the feed resumes, and
the gap an earlier holder left open."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from warehouse.collect import gc_settle, metrics
from warehouse.collect.claims import Claim, Claims
from warehouse.collect.reads import last_event_ids, unclosed_connections
from warehouse.collect.runner import STOP_DRAIN_S, FeedRunner, FeedStopped
from warehouse.collect.settings import FeedSettings
from warehouse.config import CollectorSettings, ConfigError, WriterSettings
from warehouse.feeds.contract import is_rest_kind
from warehouse.records import CLAIM_LOST, EVENT_DISCONNECT, EVENT_HANDOVER, CollectorEvent
from warehouse.redact import redact_logs
from warehouse.store.database import redact_url
from warehouse.store.engine import pooled
from warehouse.store.homes import claim as claim_folder
from warehouse.store.homes import identity_of
from warehouse.store.spool import SpoolError
from warehouse.store.writer import Writer

log = logging.getLogger("warehouse.collect")


WRITER_NAME = "collector"  # the writer of a collector running every feed: <data dir>/spool/collector


def writer_identity(selected: Sequence[str], settings: WriterSettings) -> tuple[str, WriterSettings]:
    """The writer's name and settings for a collector running the `selected` feeds (none: all).

    A spool belongs to one process. A collector running only some feeds (`--feed`, one process per
    busy feed, each on a core of its own) spools beside the default spool, in
    `collector-<feed>[+<feed>...]`, so that such collectors can run at the same time, and a restart
    of one finds what it left."""
    if not selected:
        return WRITER_NAME, settings
    suffix = "+".join(_file_safe(name) for name in sorted(set(selected)))
    if settings.spool_dir is not None:
        settings = replace(settings, spool_dir=settings.spool_dir.with_name(f"{settings.spool_dir.name}-{suffix}"))
    return f"{WRITER_NAME}-{suffix}", settings


def _file_safe(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


async def collect(url: str, feeds: list[FeedSettings], writer_settings: WriterSettings, *,
                  collector: CollectorSettings | None = None, writer_name: str = WRITER_NAME,
                  metrics_port: int | None = None, metrics_host: str = "127.0.0.1", stop: asyncio.Event | None = None,
                  reload: Callable[[], list[FeedSettings]] | None = None) -> None:
    """Run `feeds` until SIGINT/SIGTERM (or `stop`), then flush the writer, hand the feeds over and return.

    Each feed is collected while this process holds its claim (collect/claims.py), and stood by for
    otherwise. With `reload`, SIGHUP re-reads the configuration and hands each feed its new settings.
    """
    redact_logs([secret for feed in feeds for secret in feed.secrets.values()])
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if metrics_port:
        metrics.serve(metrics_port, metrics_host)
        metrics.JOBS.url = url  # export's and retention's newest runs, read from job_runs
    writer = Writer(url, writer_settings, name=writer_name, on_commit=metrics.CommitLatency())
    await _spool_is_this_warehouses(writer.engine, writer.spool_dir)
    try:
        await writer.start()  # takes the spool's lock (one process per spool directory) before anything else
    except SpoolError as exc:
        raise ConfigError(str(exc)) from None
    try:
        metrics.WRITER_QUEUE.set_function(lambda: writer.queued)  # backpressure, visible in /metrics
        metrics.WRITER_CONNECTIONS.set_function(lambda: writer.connections_open)
        metrics.SPOOL_BATCHES.set_function(lambda: writer.spool_backlog_batches)
        metrics.SPOOL_BYTES.set_function(lambda: writer.spool_bytes)
        metrics.spool_frames = lambda: writer.spool_backlog_frames
        metrics.DROPPED.set_function(lambda: writer.stats.dropped)
        metrics.DATABASE_UP.set_function(lambda: writer.stats.database_up)
        metrics.DATABASE_REACHED.set_function(lambda: writer.stats.database_reached)
        kinds = {feed.name: feed.feed for feed in feeds}
        writer.fencing.identify = lambda raw, rows: (kinds[raw.source].identity(raw, rows)
                                                     if raw.source in kinds and not is_rest_kind(raw.kind) else None)
        claims = Claims(url, collector or CollectorSettings(), [f.name for f in feeds], writer,
                        identified=[f.name for f in feeds if f.feed.identifies_events])
        held = [_Feed(feed, writer, claims) for feed in feeds]
        for feed in feeds:
            metrics.HOLDER.labels(feed.name).set(0)  # standing by, until its claim is taken
        log.info("collecting %d feed%s (%s) through the spool %s; writing to %s; Ctrl-C or SIGTERM stops",
                 len(feeds), "" if len(feeds) == 1 else "s", ", ".join(f.name for f in feeds), writer.spool_dir,
                 redact_url(url))
        log.info("this process is %s: it collects each feed while it holds the feed's claim, and stands by"
                 " for the others", claims.name)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(reload, held)))
        await claims.start()
        # The writer holds at most its queue and two batches (one committing while the next is taken); a
        # batch of batch_rows rows holds at most as many units (each has a row at least).
        gc_settle.settle(writer_settings.queue_units + 2 * writer_settings.batch_rows)
        running = [asyncio.create_task(feed.run(), name=f"feed-{feed.name}") for feed in held]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([*running, stopping], return_when=asyncio.FIRST_COMPLETED)
        for one, task in zip(held, running, strict=True):  # what the connections already brought is stored
            if not one.stop():
                task.cancel()  # standing by: nothing to drain
        await asyncio.wait(running, timeout=STOP_DRAIN_S + 2)
        stopping.cancel()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, stopping, return_exceptions=True)
        log.info("feeds stopped; flushing %d queued frames", writer.queued)
        await writer.flush()  # what they received is stored (or spooled) before the feeds are handed over
        await claims.release(list(claims.held))
        await claims.aclose()
    finally:
        await writer.close()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.remove_signal_handler(sig)


class _Feed:
    """One feed in this process: standing by, or collecting while its claim holds."""

    def __init__(self, settings: FeedSettings, writer: Writer, claims: Claims) -> None:
        self.settings = settings
        self.name = settings.name
        self.writer = writer
        self.claims = claims
        self.runner: FeedRunner | None = None
        self._last: tuple[int, str | None] | None = None  # (epoch, last SSE id) of this process's last hold
        self._stopping = False

    def stop(self) -> bool:
        """A clean stop: the live connection drains what it already brought, then ends (run() returns).
        False when there is none (standing by): cancel run() instead."""
        self._stopping = True
        if self.runner is None:
            return False
        self.runner.stop()
        return True

    async def run(self) -> None:
        while not self._stopping:
            claim = await self.claims.acquired(self.name)
            metrics.HOLDER.labels(self.name).set(1)
            runner = FeedRunner(self.settings, self.writer, resume_id=await self._resume_point(claim), claim=claim)
            claim.on_lost.append(functools.partial(_abort, runner, claim))
            self.runner = runner
            try:
                await self._took(claim)
                if claim.valid():
                    await runner.run()  # returns once the claim is lost
            except FeedStopped:
                await claim.lost.wait()  # a configuration error: held (nobody would do better) until restarted
            except Exception:
                log.exception("feed %s crashed; the other feeds go on", self.name)
                await claim.lost.wait()
            finally:
                metrics.HOLDER.labels(self.name).set(0)
                self._last = (claim.epoch, runner.resume_id)
                self.runner = None
                await runner.aclose()

    async def _resume_point(self, claim: Claim) -> str | None:
        """Where a resumable feed goes on from: the newest event id received under the epoch before this
        one — this process's own (in memory, or in its spool) when that epoch was its own, else the
        database's (what every earlier holder stored)."""
        previous = claim.took.previous_epoch
        if self._last is not None and self._last[0] == previous:
            return self._last[1]
        spooled = self.writer.spooled_event_ids().get(self.name)
        if spooled is not None and spooled[1] == previous:
            return spooled[0]
        try:
            return (await last_event_ids(self.writer.engine, [self.name])).get(self.name)
        except Exception as exc:  # the database may be gone again: the feed starts from a snapshot
            log.warning("feed %s: cannot read where it left off (%s); it starts from a snapshot", self.name,
                        type(exc).__name__)
            return None

    async def _took(self, claim: Claim) -> None:
        """A row for the handover, and the gap an earlier holder that did not stop cleanly left open."""
        took = claim.took
        await self.writer.put(None, [CollectorEvent(datetime.now(UTC), self.name, None, EVENT_HANDOVER, {
            "from": took.previous_holder, "from_epoch": took.previous_epoch, "to": self.claims.name,
            "epoch": took.epoch, "why": took.why})])
        if took.why != "released":
            await _close_gap_left_open(self.name, self.writer, took.previous_holder)


async def _spool_is_this_warehouses(engine: AsyncEngine, spool_dir: Path) -> None:
    """Refuse to start (one line, WrongWarehouse) on a spool of another database; the writer claims a
    new spool, or checks when it first reaches the database if it cannot now."""
    if not spool_dir.is_dir():
        return
    try:
        async with pooled(engine) as conn:
            owner = await identity_of((await conn.get_raw_connection()).driver_connection)
    except Exception:  # not reachable now: the writer spools, and checks once it is
        return
    with contextlib.suppress(OSError):  # an unusable spool directory: the writer says so
        claim_folder(spool_dir, owner, "the spool")


def _abort(runner: FeedRunner, claim: Claim) -> None:
    runner.abort(claim.reason or CLAIM_LOST)


async def _reload(read: Callable[[], list[FeedSettings]], feeds: list[_Feed]) -> None:
    try:
        new = {feed.name: feed for feed in read()}
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        return
    for held in feeds:
        feed = new.get(held.name)
        if feed is None or feed.feed is not held.settings.feed:
            log.warning("feed %s was removed or changed kind: restart the collector to apply", held.name)
            continue
        held.settings = feed  # the next hold's runner starts with them
        if held.runner is not None:
            await held.runner.reconfigure(feed)
    for name in sorted(set(new) - {held.name for held in feeds}):
        log.warning("feed %s is new: restart the collector to start it", name)
    log.warning("configuration reloaded")


async def _close_gap_left_open(source: str, writer: Writer, holder: str | None) -> None:
    """A holder that was killed (or cut off from the database) wrote no disconnect: write it now, dated
    at its last frame stored, so the time nobody listened shows as a gap like any other."""
    try:
        unclosed = await unclosed_connections(writer.engine, [source], writer.spooled_connections())
    except Exception as exc:  # the database may be gone again; the gap then shows from the connect
        log.warning("feed %s: cannot check for a connection left open by an earlier holder (%s)", source,
                    type(exc).__name__)
        return
    for _source, connection_id, last_frame_at in unclosed:
        log.warning("feed %s: the previous holder stopped without a clean shutdown; recording the gap from %s",
                    source, last_frame_at.isoformat())
        await writer.put(None, [CollectorEvent(last_frame_at, source, connection_id, EVENT_DISCONNECT, {
            "reason": "collector process ended without a clean shutdown (killed or crashed, or cut off from"
                      " the database)", "holder": holder, "recorded_at": datetime.now(UTC).isoformat()})])
