"""The life of one feed: connect, receive, turn frames into records, reconnect — forever.

Shared by every feed. Each received frame gets the next per-connection `seq`, is redacted,
parsed and handed to the feed's pure adapter; the raw frame and its records go to the writer
together. A frame that is not JSON, too large, or does not fit the adapter's schema is stored
raw with a `quarantine` row and the stream goes on. Everything that happens to the connection is
a `collector_events` row: connect, resume, command, disconnect (with the reason), reconnect
attempt, reset, snapshot, watchdog timeout, error. Those a frame signals (reset, snapshot,
subscribe, vendor error) are derived with the frame itself (`warehouse.feeds.derive`), so replay
makes them too; the connect event records what replay needs to derive like this connection did:
the feed kind, its adapter's version and the options it was made with. A feed with a REST side
heals each gap: every connection hands its gap to the feed's `Resyncer` (collect/resync.py), which
runs beside the receive loop, never in its way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import orjson

from warehouse import exactjson
from warehouse.backoff import Backoff
from warehouse.collect.auth import LoginFailed, TokenSource
from warehouse.collect.claims import Claim
from warehouse.collect.metrics import FeedMetrics, for_source
from warehouse.collect.resync import Resyncer
from warehouse.collect.settings import FeedSettings
from warehouse.collect.transports import (
    Disconnected,
    Frame,
    Refused,
    SseSession,
    WebSocketSession,
    tls_context,
)
from warehouse.feeds import contract
from warehouse.feeds.contract import Adapter, ConnectSpec, Output
from warehouse.feeds.derive import derive, undecodable
from warehouse.options import to_table
from warehouse.records import (
    CLAIM_LOST,
    EVENT_COMMAND,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_RECONNECT_ATTEMPT,
    EVENT_RESUME,
    EVENT_WATCHDOG_TIMEOUT,
    SHUTDOWN,
    CollectorEvent,
    RawMessage,
    Record,
    with_event_type,
)
from warehouse.redact import Redactor
from warehouse.store.writer import Writer

log = logging.getLogger("warehouse.collect")

# A clean stop first reads what the connection is already bringing (frames the vendor sent before it
# could know, a frame half received), and ends it while the receive loop waits with nothing unread
# in the socket, once nothing has come for STOP_QUIET_S, or after STOP_DRAIN_S (a feed that never
# pauses). Frames the vendor sends after that are not received: resumable feeds get them on the next
# connection, the others show the time in the shutdown's planned gap.
STOP_QUIET_S = 0.05
STOP_DRAIN_S = 0.5
FRAMES_AT_ONCE = 64  # derived and queued together; the writer runs between two such groups


class FeedStopped(Exception):
    """The feed cannot go on (configuration error reported by the vendor)."""


@dataclass
class _Outcome:
    reason: str
    long: bool = False
    retry_after: float | None = None
    fatal: bool = False


class FeedRunner:
    def __init__(self, settings: FeedSettings, writer: Writer, *, resume_id: str | None = None,
                 claim: Claim | None = None) -> None:
        self.settings = settings
        self.claim = claim  # while it holds (None: collect regardless, e.g. tests and benchmarks)
        self._aborted: str | None = None  # why the connection was dropped for good (the claim is gone)
        self._session: WebSocketSession | SseSession | None = None
        self.source = settings.name
        self.writer = writer
        self.resume_id = resume_id  # last SSE event id stored or received
        self.retry_floor_s = 0.0  # SSE: the reconnection time the server set with `retry:`
        self.metrics: FeedMetrics = for_source(settings.name)
        self.redact = Redactor(list(settings.secrets.values()))
        tuning = settings.tuning
        self.backoff = Backoff(tuning.backoff_initial_s, tuning.backoff_max_s, tuning.backoff_long_s)
        self.connections = 0
        self._tokens: TokenSource | None = None
        self._tls = tls_context(tuning.ca_file)
        self._last_seen = 0.0
        self._last_received = datetime.min.replace(tzinfo=UTC)
        self._watchdog_reason: str | None = None
        self._live: tuple[Any, UUID, list[asyncio.Task[None]]] | None = None  # session, connection, periodic
        self.resyncer = Resyncer(settings, writer, self.metrics)
        self._task: asyncio.Task[Any] | None = None  # the one running run()
        self._stop_by: float | None = None  # set by stop(): when the draining connection ends at the latest
        self._reading = False  # waiting in recv(): every frame received so far is with the writer
        self._reading_since = 0.0  # when that wait began: the connection is quiet only while listened to

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Collect until stop() (or cancelled), or until the vendor reports a configuration error."""
        self._task = asyncio.current_task()
        attempt = 0
        try:
            while self._stop_by is None and self._aborted is None:
                if attempt:
                    await self._event(None, EVENT_RECONNECT_ATTEMPT, {"attempt": attempt})
                    self.metrics.reconnect_attempts += 1
                attempt += 1
                outcome = await self._one_connection()
                if self._aborted is not None:
                    return
                if outcome.fatal:
                    log.error("feed %s stopped: %s; fix the configuration and restart", self.source, outcome.reason)
                    raise FeedStopped(outcome.reason)
                if self._stop_by is not None:  # the connection ended by itself while draining
                    return
                delay = max(self.backoff.next(retry_after=outcome.retry_after, long=outcome.long), self.retry_floor_s)
                log.warning("feed %s: %s; reconnecting in %.1f s", self.source, outcome.reason, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if self._stop_by is not None and self._task is not None and self._task.uncancel() == 0:
                return  # stop()'s own cancel: the shutdown disconnect is recorded, nothing else to do
            raise

    def stop(self) -> None:
        """Stop cleanly, at once if not connected; a live connection is drained first (STOP_QUIET_S,
        STOP_DRAIN_S), then ends with a shutdown disconnect. run() returns once stopped."""
        if self._stop_by is not None:
            return
        self._stop_by = time.monotonic() + STOP_DRAIN_S
        if self._task is None or self._task.done():
            return
        if self._live is None:  # connecting, logging in or waiting to reconnect: nothing to read
            self._task.cancel()
        else:
            self._end_when_drained()

    def _end_when_drained(self) -> None:
        """Cancel the receive loop while it waits for more, once nothing has come for STOP_QUIET_S (or
        STOP_DRAIN_S has passed); its shutdown path records the disconnect and closes the connection."""
        if self._live is None or self._task is None or self._stop_by is None:
            return  # the connection ended by itself: run() returns
        now = time.monotonic()
        quiet = now - max(self._last_seen, self._reading_since)
        if self._reading and (quiet >= STOP_QUIET_S or now >= self._stop_by) and not self._live[0].unread():
            self._task.cancel()
            return
        asyncio.get_running_loop().call_later(max(0.005, STOP_QUIET_S - quiet), self._end_when_drained)

    async def _one_connection(self) -> _Outcome:
        settings = self.settings
        spec = settings.feed.connect(settings.options, settings.secrets, self.resume_id)
        session = self._session = self._new_session(spec)
        connection_id = uuid4()
        try:
            headers = dict(spec.headers)
            if spec.bearer_from_login is not None:
                self._tokens = self._tokens or TokenSource(spec.bearer_from_login, tls=self._tls)
                headers["Authorization"] = f"Bearer {await self._tokens.token()}"
            if spec.resume_header and self.resume_id:
                headers[spec.resume_header] = self.resume_id
            try:
                await session.open(spec.url, headers)
            except Refused as refused:
                return await self._refused(refused, spec)
            except Disconnected as exc:
                await self._event(None, EVENT_ERROR, {"error": self.redact.text(str(exc.args[0]))})
                return _Outcome(self.redact.text(str(exc.args[0])))
            return await self._stream(session, spec, connection_id)
        except LoginFailed as exc:
            await self._event(None, EVENT_ERROR, {"error": str(exc), "status": exc.status})
            return _Outcome(str(exc), long=exc.status is not None)
        finally:
            self._session = None
            await session.close()
            if isinstance(session, SseSession):  # where the stream left off: what the next connection sends
                self.resume_id = session.last_event_id
                if session.retry_s is not None:
                    self.retry_floor_s = session.retry_s

    async def aclose(self) -> None:
        await self.resyncer.aclose()
        if self._tokens is not None:
            await self._tokens.aclose()

    def abort(self, reason: str) -> None:
        """Drop the connection now and make no other (the claim on the feed is gone): no goodbye to
        the vendor, the socket is shut in this call."""
        self._aborted = reason
        if self._session is not None:
            self._session.abort()
        self.resyncer.cancel()

    def _new_session(self, spec: ConnectSpec) -> WebSocketSession | SseSession:
        s = self.settings.tuning
        if spec.transport == "ws":
            return WebSocketSession(ping_interval=s.ping_interval_s, connect_timeout=s.connect_timeout_s,
                                    max_frame_bytes=s.max_frame_bytes, tls=self._tls)
        return SseSession(connect_timeout=s.connect_timeout_s, max_event_bytes=s.max_frame_bytes,
                          last_event_id=self.resume_id, heard=self._heard, tls=self._tls)

    def _heard(self) -> None:
        self._last_seen = time.monotonic()

    async def _refused(self, refused: Refused, spec: ConnectSpec) -> _Outcome:
        body = self.redact.text(refused.body[:500])
        await self._event(None, EVENT_ERROR, {"status": refused.status, "body": body,
                                              "url": self.redact.text(spec.url)})
        reason = f"server refused the connection: HTTP {refused.status} {body[:200]}".strip()
        reaction = self.settings.feed.refused(refused.status, refused.body)
        if reaction.reauthenticate and self._tokens is not None:
            self._tokens.invalidate()  # an expired token: the next attempt logs in again
        return _Outcome(reason, long=reaction.long, retry_after=refused.retry_after, fatal=reaction.fatal)

    async def _stream(self, session: Any, spec: ConnectSpec, connection_id: UUID) -> _Outcome:
        opened = time.monotonic()
        self.connections += 1
        feed, options = self.settings.feed, self.settings.options  # a reload during the awaits below changes neither
        await self._event(connection_id, EVENT_CONNECT, {
            "url": self.redact.text(spec.url), "transport": spec.transport, "connection": self.connections,
            "feed_kind": feed.kind, "adapter_version": feed.version,
            # what replay makes this connection's adapter from (secret options name variables, not values)
            "options": orjson.loads(self.redact.text(orjson.dumps(to_table(options)).decode()))})
        if spec.resume_header and self.resume_id:
            await self._event(connection_id, EVENT_RESUME, {spec.resume_header: self.resume_id})
        for command in spec.send_on_connect:
            await session.send(command)
            await self._event(connection_id, EVENT_COMMAND, {"command": self.redact.text(command)})
        # The time nobody listened ends now: heal it over REST, beside the stream (the last frame
        # before it, when this process saw one; else the resyncer looks it up).
        seen = self._last_received if self._last_received > datetime.min.replace(tzinfo=UTC) else None
        self.resyncer.gap(seen, datetime.now(UTC))
        adapter = feed.adapter(self.source, options)
        self._watchdog_reason = None
        periodic = self._start_periodic(session, connection_id, spec)
        helpers = [asyncio.create_task(self._watchdog(session, connection_id))]
        self._live = (session, connection_id, periodic)
        self.metrics.connected = True
        try:
            outcome = await self._receive(session, adapter, connection_id)
        except Disconnected as exc:
            outcome = _Outcome(self._aborted or self._watchdog_reason or self.redact.text(str(exc.args[0])))
        except asyncio.CancelledError:
            for helper in [*helpers, *self._live[2]]:
                helper.cancel()
            for message in () if self._aborted else spec.send_on_close:
                with contextlib.suppress(Disconnected, OSError):
                    await asyncio.wait_for(session.send(message), 2)
                    await self._event(connection_id, EVENT_COMMAND, {"command": self.redact.text(message)})
            await self._event(connection_id, EVENT_DISCONNECT, {"reason": self._aborted or SHUTDOWN})
            raise
        finally:
            for helper in [*helpers, *self._live[2]]:
                helper.cancel()
            self._live = None
            self.metrics.connected = False
            self._reading = False
        if time.monotonic() - opened >= self.settings.tuning.stable_after_s:
            self.backoff.reset()
        await self._event(connection_id, EVENT_DISCONNECT, {"reason": outcome.reason})
        return outcome

    def _start_periodic(self, session: Any, connection_id: UUID, spec: ConnectSpec) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._every(session, connection_id, interval, message))
                for interval, message in spec.periodic]

    async def reconfigure(self, settings: FeedSettings) -> None:
        """New options from a reloaded config (SIGHUP): applied to the live connection where the
        feed knows how (CKEX subscriptions), otherwise from the next connection on."""
        commands = settings.feed.reload_commands(self.settings.options, settings.options)
        self.settings = settings
        self.redact = Redactor(list(settings.secrets.values()))
        self.resyncer.configure(settings)
        if self._live is None or not commands:
            return
        session, connection_id, periodic = self._live
        for task in periodic:
            task.cancel()
        for message in commands:
            await session.send(message)
            await self._event(connection_id, EVENT_COMMAND, {"command": self.redact.text(message), "why": "reload"})
        spec = settings.feed.connect(settings.options, settings.secrets, self.resume_id)
        self._live = (session, connection_id, self._start_periodic(session, connection_id, spec))

    async def _every(self, session: Any, connection_id: UUID, interval: float, message: str) -> None:
        """Send `message` every `interval` seconds (pings, subscription renewals), each one recorded."""
        with contextlib.suppress(Disconnected):
            while True:
                await asyncio.sleep(interval)
                await session.send(message)
                await self._event(connection_id, EVENT_COMMAND, {"command": self.redact.text(message)})

    async def _watchdog(self, session: Any, connection_id: UUID) -> None:
        """Close a connection that has been silent too long: a dead socket looks just like a quiet one."""
        limit = self.settings.config.silence_timeout_s
        self._last_seen = time.monotonic()
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            silent = time.monotonic() - self._last_seen
            if silent >= limit:
                self._watchdog_reason = f"watchdog: nothing received for {silent:.1f} s (limit {limit:g} s)"
                await self._event(connection_id, EVENT_WATCHDOG_TIMEOUT, {"silent_s": round(silent, 3)})
                await session.close()
                return

    # -- frames ----------------------------------------------------------------------------------

    async def _receive(self, session: Any, adapter: Adapter, connection_id: UUID) -> _Outcome:
        seq = 0
        claim = self.claim
        while True:
            if claim is not None and not claim.valid():  # not one frame more once the claim is gone
                raise Disconnected(claim.reason or CLAIM_LOST)
            self._reading, self._reading_since = True, time.monotonic()
            frames = await session.recv_many()  # every frame already received, so one wait for all of them
            self._reading = False
            self._last_seen = time.monotonic()
            for start in range(0, len(frames), FRAMES_AT_ONCE):
                if start:
                    # recv_many() and put_many() complete without suspending while frames are buffered:
                    # let the writer (and the watchdog) run, or a burst delays every commit behind it.
                    await asyncio.sleep(0)
                if claim is not None and not claim.valid():  # again after each wait, as before each frame
                    raise Disconnected(claim.reason or CLAIM_LOST)
                seq, outcome = await self._frames(frames[start:start + FRAMES_AT_ONCE], adapter, connection_id, seq)
                if outcome is not None:
                    return outcome

    async def _frames(self, frames: list[Frame], adapter: Adapter, connection_id: UUID,
                      seq: int) -> tuple[int, _Outcome | None]:
        """Derive frames received together (each gets the next `seq`) and hand them to the writer at
        once; the outcome of the first that ends the connection (the frames after it are not taken)."""
        # A wall clock stepped back (NTP) must not reorder frames: received_at never decreases.
        received_at = self._last_received = max(datetime.now(UTC), self._last_received)
        feed, source, redact = self.settings.feed, self.source, self.redact
        limit = self.settings.tuning.max_frame_bytes
        units: list[tuple[RawMessage, list[Record]]] = []
        outcome = None
        size = rows = quarantined = 0
        for frame in frames:
            seq += 1
            size += frame.size or len(frame.data)
            try:  # an event cut off as it arrived is quarantined by its size: nothing to decode
                data = redact.data(frame.data if frame.size is not None else feed.decode(frame.data, limit))
            except contract.FrameError as exc:
                derived = undecodable(redact.data(frame.data), str(exc), received_at=received_at, source=source,
                                      connection_id=connection_id, seq=seq, event_id=frame.event_id)
            else:
                derived = derive(adapter, feed.kind, data, received_at=received_at, source=source,
                                 connection_id=connection_id, seq=seq, event_id=frame.event_id,
                                 max_frame_bytes=limit, size=frame.size)
            if frame.event_type is not None:
                derived.raw = derived.raw._replace(kind=with_event_type(derived.raw.kind, frame.event_type))
            units.append((derived.raw, derived.records))
            output = derived.output
            if output is None:
                quarantined += 1
                continue
            rows += len(derived.records)
            if output.control is not None:
                outcome = _control(output)
                if outcome is not None:
                    break
        metrics = self.metrics
        metrics.last_frame_at = received_at
        metrics.frames += len(units)
        metrics.bytes += size
        metrics.rows += rows
        metrics.quarantined += quarantined
        await self.writer.put_many(units)
        return seq, outcome

    async def _event(self, connection_id: UUID | None, event: str, detail: dict[str, Any] | None = None) -> None:
        await self.writer.put(None, [CollectorEvent(datetime.now(UTC), self.source, connection_id, event, detail)])


def _control(output: Output) -> _Outcome | None:
    """What a control signal means for the connection (its collector_events row, if it makes one,
    was derived with the frame)."""
    if output.control in (contract.RETRY, contract.RETRY_LONG, contract.FATAL):
        reason = f"vendor: {exactjson.dumps(output.detail or {}).decode()}"  # the frame's numbers: any size
        return _Outcome(reason, long=output.control == contract.RETRY_LONG, fatal=output.control == contract.FATAL)
    return None
