"""Claims: which collector process collects each feed, held in PostgreSQL (docs/claims.md).

Every process running a config registers in `collector_processes` and wants its feeds. A feed's row
in `collector_claims` names its holder; a holder renews all its claims in one statement every third
of `claim_ttl_s` (the expiry is on the database's clock), a standby polls (and LISTENs, so that a
clean release wakes it at once) and takes a feed that was released, whose holder's claim expired, or
whose holder's spool directory it now owns (the lock proves that holder gone). Each takeover bumps
the feed's epoch, the fencing token the writer stamps on frames and checks where they are committed.

A holder that cannot renew closes the feed's connections at a local deadline — when it *sent* its
last successful renewal, plus the TTL, less a margin — on the monotonic clock, strictly before the
database can let anyone else take the feed, whatever the two clocks say. One exception: a holder
that saw no standby for the feed at its last renewal (`solo`) keeps streaming and spooling through
a database outage (nobody could take over; stopping would only lose frames), and a process that
appears meanwhile takes such a feed only after watching it unrenewed for twice the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from uuid import uuid4

import asyncpg

from warehouse.backoff import Backoff
from warehouse.config import CollectorSettings
from warehouse.records import CLAIM_LOST
from warehouse.store.connection import one_line
from warehouse.store.database import redact_url
from warehouse.store.engine import dedicated
from warehouse.store.writer import Writer

log = logging.getLogger("warehouse.collect")

CHANNEL = "warehouse_claims"  # NOTIFY'd with the feed's name when a claim is released
SOLO_WATCH = 2.0  # a standby takes a solo holder's expired feed after watching it unrenewed this many TTLs

# This process's row (made, or renewed), then the claims it holds — in one statement.
_RENEW = """
WITH me AS (
    INSERT INTO collector_processes (id, name, host, pid, version, feeds, spool, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6::text[], $7, now() + make_interval(secs => $8))
    ON CONFLICT (id) DO UPDATE SET seen_at = now(), expires_at = EXCLUDED.expires_at, feeds = EXCLUDED.feeds
    RETURNING id)
UPDATE collector_claims AS c
   SET renewed_at = now(), expires_at = now() + make_interval(secs => $8),
       solo = NOT EXISTS (SELECT 1 FROM collector_processes AS p WHERE p.id <> $1 AND p.expires_at > now()
                          AND c.feed = ANY (p.feeds)),
       watch = (SELECT coalesce(jsonb_agg(w), '[]'::jsonb) FROM jsonb_array_elements(c.watch) AS w
                WHERE (w->>'since')::timestamptz > now() - make_interval(secs => $11)
                  AND NOT (c.feed = ANY ($12::text[]) AND (w->>'settled')::boolean))
  FROM unnest($9::text[], $10::bigint[]) AS h(feed, epoch)
 WHERE c.feed = h.feed AND c.epoch = h.epoch AND c.holder_process = $1 AND EXISTS (SELECT 1 FROM me)
RETURNING c.feed, c.solo, c.watch
"""
_ENSURE = "INSERT INTO collector_claims (feed) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
_STATE = """
SELECT c.feed, c.holder, c.holder_process, c.expires_at < now() AS expired, c.solo, c.renewed_at,
       p.spool IS NOT NULL AND p.spool = $2 AS ours
  FROM collector_claims AS c LEFT JOIN collector_processes AS p ON p.id = c.holder_process
 WHERE c.feed = ANY ($1::text[])
"""
_TAKE = "SELECT * FROM warehouse_claims_take($1, $2, $3, $4, $5, $6)"
_RELEASE = f"""
WITH released AS (
    UPDATE collector_claims AS c
       SET holder_process = NULL, expires_at = now(),
           watch = CASE WHEN h.pending THEN c.watch || jsonb_build_array(jsonb_build_object(
                       'epoch', c.epoch, 'spool', $4::uuid, 'since', now(), 'settled', false)) ELSE c.watch END
      FROM unnest($2::text[], $3::bigint[], $5::boolean[]) AS h(feed, epoch, pending)
     WHERE c.feed = h.feed AND c.epoch = h.epoch AND c.holder_process = $1
 RETURNING c.feed)
SELECT feed, pg_notify('{CHANNEL}', feed) FROM released
"""
_UNSETTLED = """
SELECT feed, (w->>'epoch')::bigint FROM collector_claims, jsonb_array_elements(watch) AS w
 WHERE feed = ANY ($1::text[]) AND w->>'spool' = $2::text AND NOT (w->>'settled')::boolean
"""
_SETTLE = """
UPDATE collector_claims
   SET watch = (SELECT jsonb_agg(CASE WHEN (w->>'epoch')::bigint = $2 THEN jsonb_set(w, '{settled}', 'true') ELSE w END)
                  FROM jsonb_array_elements(watch) AS w)
 WHERE feed = $1 AND watch @> jsonb_build_array(jsonb_build_object('epoch', $2::bigint))
"""
_PRUNE = """
WITH gone AS (DELETE FROM collector_processes WHERE expires_at < now() - interval '1 day')
DELETE FROM collector_handover_keys AS k
 WHERE NOT EXISTS (SELECT 1 FROM collector_claims AS c WHERE c.feed = k.source AND c.watch <> '[]'::jsonb)
"""


@dataclass
class Took:
    """How this process came to hold a feed."""

    epoch: int
    previous_epoch: int
    previous_holder: str | None
    why: str  # first, released, expired, expired without a standby, holder restarted
    watch: list[dict[str, Any]]


@dataclass(eq=False)
class Claim:
    """This process's hold on one feed, at one epoch."""

    feed: str
    took: Took
    deadline: float  # time.monotonic(): its connections close then, unless renewed (or solo)
    solo: bool
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None  # why it was lost
    on_lost: list[Callable[[], None]] = field(default_factory=list)  # called at once, in the timer
    timer: asyncio.TimerHandle | None = None

    @property
    def epoch(self) -> int:
        return self.took.epoch

    def valid(self) -> bool:
        """Still ours: frames may be read under it."""
        return not self.lost.is_set()


def process_name(configured: str | None) -> str:
    return configured or f"{socket.gethostname()}:{os.getpid()}"


class Claims:
    """The claims of one collector process, kept in a task of their own."""

    def __init__(self, url: str, settings: CollectorSettings, feeds: Sequence[str], writer: Writer, *,
                 identified: Sequence[str] = ()) -> None:
        self.url = url
        self.settings = settings
        self.name = process_name(settings.name)
        self.process = uuid4()
        self.feeds = list(feeds)
        # Feeds whose frames carry a vendor identity: their holder registers identities while watched,
        # until past the copies. The others' watch ends once its late frames are all in.
        self.identified = set(identified)
        self.writer = writer
        self.held: dict[str, Claim] = {}
        self._waiting: dict[str, asyncio.Future[Claim]] = {}
        self._conn: asyncpg.Connection | None = None
        self._using = asyncio.Lock()  # one statement at a time on _conn: the loop's, or a release's
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(0.2, 1.0)
        self._next_renew = 0.0
        self._next_prune = 0.0
        self._solo_seen: dict[str, tuple[datetime | None, float]] = {}  # feed → (renewed_at seen, since)
        self._told_standby: dict[str, str | None] = {}  # feed → the holder last logged
        self._down_since: float | None = None

    # -- public ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="claims")

    async def acquired(self, feed: str) -> Claim:
        """Wait until this process holds `feed` (standing by meanwhile)."""
        waiting = self._waiting.get(feed)
        if waiting is None or waiting.done():
            waiting = self._waiting[feed] = asyncio.get_running_loop().create_future()
            self._wake.set()
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.done():  # stop wanting it (a claim taken meanwhile is released with the others)
                waiting.cancel()
                self._waiting.pop(feed, None)
            raise

    async def release(self, feeds: Sequence[str]) -> None:
        """Hand `feeds` over (a clean stop: the writer has stored what they received). A standby is
        woken at once; a feed whose frames could not all be stored is released as watched."""
        claims = [self.held.pop(feed) for feed in feeds if feed in self.held]
        for claim in claims:
            if claim.timer is not None:
                claim.timer.cancel()
        if not claims:
            return
        pending = [self.writer.pending(c.feed, c.epoch) > 0 for c in claims]
        try:
            async with self._using:  # (after the renewal in flight, if any)
                if self._conn is None:
                    raise ConnectionError("no connection to the database")
                released = await self._conn.fetch(_RELEASE, self.process, [c.feed for c in claims],
                                                  [c.epoch for c in claims], self.writer.spool_id, pending,
                                                  timeout=self.settings.renew_every_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("claims: could not release %s (%s); a standby takes them when they expire",
                        ", ".join(c.feed for c in claims), one_line(str(exc)))
            return
        if released:
            log.info("claims: released %s", ", ".join(row["feed"] for row in released))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._mark()
        for claim in self.held.values():
            if claim.timer is not None:
                claim.timer.cancel()
        for waiting in self._waiting.values():
            waiting.cancel()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.execute("DELETE FROM collector_processes WHERE id = $1", self.process, timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 2)
            self._conn = None

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            async with self._using:
                try:
                    conn = await self._connected()
                    if time.monotonic() >= self._next_renew:
                        await self._renew(conn)
                        await self._settle(conn)
                        await self._mark()
                    if self._waiting:
                        await self._take(conn)
                    if time.monotonic() >= self._next_prune:
                        await conn.execute(_PRUNE, timeout=self.settings.renew_every_s)
                        self._next_prune = time.monotonic() + 60
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                    await self._down(exc)
            pause = min(self.settings.poll_s, max(0.0, self._next_renew - time.monotonic()))
            if self._conn is None:
                pause = self._backoff.next()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # (asyncio.timeout: a cancel is never lost to a wake-up)
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def _connected(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        timeout = self.settings.renew_every_s
        # The engine's (the writer's: one per process), dedicated: LISTEN is this connection's session
        # state, which the pool must not reset, and no other user may hear or end.
        async with asyncio.timeout(timeout):
            conn = await dedicated(self.writer.engine)
        try:
            await self._renew(conn)
            await conn.execute(_ENSURE, self.feeds, timeout=timeout)
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._backoff.reset()
        if self._down_since is not None:
            log.warning("claims: the database is back after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None
        return conn

    def _notified(self, *args: Any) -> None:
        self._wake.set()

    async def _down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("claims: cannot reach the database %s (%s); feeds held are closed %.0f s after their last"
                      " renewal unless no standby could take them", redact_url(self.url), one_line(str(exc)),
                      self.settings.claim_ttl_s - self.settings.margin_s)
        self._solo_seen.clear()  # watching a solo holder must be continuous
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    # -- holding ---------------------------------------------------------------------------------

    async def _renew(self, conn: asyncpg.Connection) -> None:
        """Renew every claim held (and this process's own row) in one statement."""
        claims = list(self.held.values())
        sent = time.monotonic()
        rows = await conn.fetch(_RENEW, self.process, self.name, socket.gethostname(), os.getpid(), _version(),
                                self.feeds, self.writer.spool_id, self.settings.claim_ttl_s,
                                [c.feed for c in claims], [c.epoch for c in claims], self.settings.watch_s,
                                [f for f in self.feeds if f not in self.identified],
                                timeout=self.settings.renew_every_s)
        self._next_renew = sent + self.settings.renew_every_s
        renewed = {row["feed"]: row for row in rows}
        for claim in claims:
            row = renewed.get(claim.feed)
            if self.held.get(claim.feed) is not claim:
                continue  # lost while the renewal was on its way
            if row is None:
                self._lose(claim, f"{CLAIM_LOST}: another process took the feed (its epoch moved on)")
                continue
            claim.solo = bool(row["solo"])
            if not row["watch"]:
                self.writer.fencing.watched.discard(claim.feed)
            self._schedule(claim, sent)

    def _schedule(self, claim: Claim, sent: float) -> None:
        """The claim's deadline: from when the renewal (or takeover) that set its expiry was sent."""
        claim.deadline = sent + self.settings.claim_ttl_s - self.settings.margin_s
        if claim.timer is not None:
            claim.timer.cancel()
        claim.timer = asyncio.get_running_loop().call_at(claim.deadline, self._deadline, claim)

    def _deadline(self, claim: Claim) -> None:
        if self.held.get(claim.feed) is not claim:
            return
        if claim.solo:
            log.warning("feed %s: its claim could not be renewed, but no standby could take it over: collecting"
                        " on, into the spool", claim.feed)
            return
        self._lose(claim, f"{CLAIM_LOST}: it could not be renewed for"
                          f" {self.settings.claim_ttl_s - self.settings.margin_s:g} s (database unreachable)")

    def _lose(self, claim: Claim, reason: str) -> None:
        """Stop collecting `claim.feed` now: its connections close in the callbacks, before anything else."""
        if self.held.get(claim.feed) is claim:
            del self.held[claim.feed]
        if claim.timer is not None:
            claim.timer.cancel()
        claim.reason = reason
        claim.lost.set()
        log.error("feed %s: %s; its connections are closed, standing by", claim.feed, reason)
        for callback in claim.on_lost:
            callback()
        self.writer.fencing.watched.discard(claim.feed)
        self._wake.set()

    async def _settle(self, conn: asyncpg.Connection) -> None:
        """Epochs whose late frames were to come from this process's spool, now all stored: settled."""
        spool = self.writer.spool_id
        if spool is None:
            return
        for feed, epoch in await conn.fetch(_UNSETTLED, self.feeds, str(spool), timeout=self.settings.renew_every_s):
            if self.writer.pending(feed, epoch) == 0 and not (feed in self.held and self.held[feed].epoch == epoch):
                await conn.execute(_SETTLE, feed, epoch, timeout=self.settings.renew_every_s)
                log.info("feed %s: the frames received under epoch %d are all stored", feed, epoch)

    async def _mark(self) -> None:
        """Overlap rows for the frames stored late and the copies left out since the last ones."""
        for row in self.writer.fencing.overlap_rows():
            detail = row.detail
            log.warning("feed %s: %d frames received under epoch %d stored after the feed had passed on (epoch"
                        " %d), %d copies of events stored already left out", row.source, detail["frames_stored"],
                        detail["epoch"], detail["holder_epoch"], detail["copies_left_out"])
            await self.writer.put(None, [row])

    # -- standing by -----------------------------------------------------------------------------

    async def _take(self, conn: asyncpg.Connection) -> None:
        wanted = [feed for feed, waiting in self._waiting.items() if not waiting.done()]
        spool = self.writer.spool_id
        now = time.monotonic()
        states = {row["feed"]: row for row in await conn.fetch(_STATE, wanted, spool,
                                                               timeout=self.settings.renew_every_s)}
        for feed in wanted:
            state = states.get(feed)
            solo_renewed = None
            if state is not None and state["holder_process"] is not None and not state["ours"]:
                if not state["expired"]:
                    self._standing_by(feed, state["holder"])
                    continue
                if state["solo"]:
                    seen, since = self._solo_seen.get(feed, (None, now))
                    if seen != state["renewed_at"]:
                        self._solo_seen[feed] = (state["renewed_at"], now)
                        self._standing_by(feed, state["holder"])
                        continue
                    if now - since < SOLO_WATCH * self.settings.claim_ttl_s:
                        continue
                    solo_renewed = state["renewed_at"]
            sent = time.monotonic()
            row = await conn.fetchrow(_TAKE, feed, self.name, self.process, spool, self.settings.claim_ttl_s,
                                      solo_renewed, timeout=self.settings.renew_every_s)
            if row is None:
                continue
            self._solo_seen.pop(feed, None)
            took = Took(row["taken_epoch"], row["previous_epoch"], row["previous_holder"], row["why"],
                        list(row["watch_now"] or []))
            claim = Claim(feed, took, deadline=0.0, solo=bool(row["solo_now"]))
            self.held[feed] = claim
            self._schedule(claim, sent)
            fencing = self.writer.fencing
            fencing.epochs[feed] = took.epoch
            if took.watch and feed in self.identified:
                fencing.watched.add(feed)
            else:
                fencing.watched.discard(feed)
            previous = f" from {took.previous_holder}" if took.previous_holder else ""
            log.warning("feed %s: taken%s (%s) at epoch %d", feed, previous, took.why, took.epoch)
            self._told_standby.pop(feed, None)
            waiting = self._waiting.pop(feed)
            if not waiting.done():
                waiting.set_result(claim)

    def _standing_by(self, feed: str, holder: str | None) -> None:
        if self._told_standby.get(feed) != holder:
            self._told_standby[feed] = holder
            log.info("feed %s is collected by %s; standing by", feed, holder)


def _version() -> str | None:
    try:
        return version("odds-warehouse")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return None
