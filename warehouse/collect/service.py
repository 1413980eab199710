"""A collector process: the writer, a runner per feed, signals, reloads, and the bookkeeping of a
start — resume points, and the gaps an earlier process left open."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from warehouse.collect import gc_settle, metrics
from warehouse.collect.reads import last_event_ids, unclosed_connections
from warehouse.collect.runner import STOP_DRAIN_S, FeedRunner, run_feeds
from warehouse.collect.settings import FeedSettings
from warehouse.config import ConfigError, WriterSettings
from warehouse.records import EVENT_DISCONNECT, CollectorEvent
from warehouse.redact import redact_logs
from warehouse.store.database import redact_url
from warehouse.store.homes import claim, identity_of
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


@contextlib.contextmanager
def _feeds_claimed(feeds: list[FeedSettings], directory: Path) -> Iterator[None]:
    """One collector per feed, or every frame would be stored twice: a lock file per feed beside the
    spools (so shared by the collectors of one config), held while collecting (the OS releases it
    if the process dies)."""
    with contextlib.ExitStack() as held:
        for feed in feeds:
            path = directory / f".feed-{_file_safe(feed.name)}.lock"
            try:
                directory.mkdir(parents=True, exist_ok=True)
                handle = held.enter_context(open(path, "w"))  # held until collecting ends
            except OSError as exc:  # the spool cannot be there either: the writer will say so
                log.warning("cannot claim feed %s (%s); make sure no other collector runs it", feed.name, exc)
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"feed {feed.name} is already being collected by another process (it holds"
                                  f" {path}); stop that one, or leave this feed out with --feed") from None
        yield


async def collect(url: str, feeds: list[FeedSettings], writer_settings: WriterSettings, *,
                  writer_name: str = WRITER_NAME, metrics_port: int | None = None,
                  stop: asyncio.Event | None = None,
                  reload: Callable[[], list[FeedSettings]] | None = None) -> None:
    """Run `feeds` until SIGINT/SIGTERM (or `stop`), then flush the writer and return.

    With `reload`, SIGHUP re-reads the configuration and hands each running feed its new settings.
    """
    redact_logs([secret for feed in feeds for secret in feed.secrets.values()])
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if metrics_port:
        metrics.serve(metrics_port)
    writer = Writer(url, writer_settings, name=writer_name, on_commit=metrics.CommitLatency())
    await _spool_is_this_warehouses(url, writer.spool_dir)
    with _feeds_claimed(feeds, writer.spool_dir.parent):  # before anything is spooled, read or connected
        async with writer:
            metrics.WRITER_QUEUE.set_function(lambda: writer.queued)  # backpressure, visible in /metrics
            metrics.SPOOL_BATCHES.set_function(lambda: writer.spool_backlog_batches)
            metrics.DROPPED.set_function(lambda: writer.stats.dropped)
            metrics.DATABASE_UP.set_function(lambda: writer.stats.database_up)
            metrics.DATABASE_REACHED.set_function(lambda: writer.stats.database_reached)
            resume = await _resume_points(url, feeds, writer)
            await _close_gaps_left_open(url, feeds, writer)
            runners = [FeedRunner(f, writer, resume_id=resume.get(f.name)) for f in feeds]
            log.info("collecting %d feed%s (%s) through the spool %s; writing to %s; Ctrl-C or SIGTERM stops",
                     len(feeds), "" if len(feeds) == 1 else "s", ", ".join(f.name for f in feeds), writer.spool_dir,
                     redact_url(url))
            if reload is not None:
                loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(reload, runners)))
            gc_settle.settle()
            running = asyncio.create_task(run_feeds(runners))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
            for runner in runners:  # what the connections already brought is stored, then each ends
                runner.stop()
            await asyncio.wait([running], timeout=STOP_DRAIN_S + 2)
            running.cancel()
            stopping.cancel()
            await asyncio.gather(running, stopping, return_exceptions=True)
            for runner in runners:
                await runner.aclose()
            log.info("feeds stopped; flushing %d queued frames", writer.queued)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.remove_signal_handler(sig)


async def _spool_is_this_warehouses(url: str, spool_dir: Path) -> None:
    """Refuse to start (one line, WrongWarehouse) on a spool of another database; the writer claims a
    new spool, or checks when it first reaches the database if it cannot now."""
    if not spool_dir.is_dir():
        return
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception:  # not reachable now: the writer spools, and checks once it is
        return
    try:
        owner = await identity_of(conn)
    finally:
        await conn.close()
    with contextlib.suppress(OSError):  # an unusable spool directory: the writer says so
        claim(spool_dir, owner, "the spool")


async def _reload(read: Callable[[], list[FeedSettings]], runners: list[FeedRunner]) -> None:
    try:
        new = {feed.name: feed for feed in read()}
    except ConfigError as exc:
        log.error("reload refused, the running configuration stays: %s", exc)
        return
    running = {runner.source for runner in runners}
    for runner in runners:
        feed = new.get(runner.source)
        if feed is None or feed.feed is not runner.settings.feed:
            log.warning("feed %s was removed or changed kind: restart the collector to apply", runner.source)
            continue
        await runner.reconfigure(feed)
    for name in sorted(set(new) - running):
        log.warning("feed %s is new: restart the collector to start it", name)
    log.warning("configuration reloaded")


async def _close_gaps_left_open(url: str, feeds: list[FeedSettings], writer: Writer) -> None:
    """A collector that was killed wrote no disconnect: write it now, dated at its last frame, so the
    time nobody listened shows as a gap like any other."""
    try:
        unclosed = await unclosed_connections(url, [f.name for f in feeds], writer.spooled_connections())
    except Exception as exc:  # the database may be down at start; the gap then shows from the connect
        log.warning("cannot check for connections left open by an earlier run (%s)", type(exc).__name__)
        return
    for source, connection_id, last_frame_at in unclosed:
        log.warning("feed %s: the previous collector stopped without a clean shutdown; recording the gap"
                    " from %s", source, last_frame_at.isoformat())
        await writer.put(None, [CollectorEvent(last_frame_at, source, connection_id, EVENT_DISCONNECT, {
            "reason": "collector process ended without a clean shutdown (killed or crashed)",
            "recorded_at": datetime.now(UTC).isoformat()})])


async def _resume_points(url: str, feeds: list[FeedSettings], writer: Writer) -> dict[str, str]:
    """Where each resumable feed left off: the spool first (newest), else the database."""
    stored: dict[str, str] = {}
    try:
        stored = await last_event_ids(url, [f.name for f in feeds])
    except Exception as exc:  # the database may be down at start: the spool still tells something
        log.warning("cannot read resume points from the database (%s); feeds start from a snapshot",
                    type(exc).__name__)
    return {**stored, **writer.spooled_event_ids()}
