"""Healing a gap over REST: the calls a feed describes, made beside the live stream.

When a connection opens after a gap, the runner hands the gap to its `Resyncer`, which runs in a
task of its own: the receive loop never waits for it. It gathers the context from the warehouse
(where the gap began, the fixtures seen lately), asks the feed for its requests (`Feed.resync`)
and performs them: a worker per endpoint, so one endpoint's cooldown does not hold the others
back, and one `Pacer` for the feed's calls per second, each endpoint's cooldown and the delay a 429
named. Each answer is a frame: one raw_messages row of kind `<origin>:<path>`, with the request
(secrets masked) as its event_id, dated when the request was sent, derived by the feed's REST
adapter through `feeds.derive` like any frame. Calls that failed (5xx, timeouts, a refused key) are
made again after the feed's backoff, until they succeed or the collector stops; a gap that comes
meanwhile is healed by the next pass. Every pass is a `resync_started` and a `resync_finished`
row in collector_events: what it covered, calls made, refused and failed, rows derived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import orjson

from warehouse.backoff import Backoff, named_delay
from warehouse.collect.metrics import FeedMetrics
from warehouse.collect.reads import fixtures_seen, last_frame_before
from warehouse.collect.settings import FeedSettings
from warehouse.collect.transports import retry_after_seconds, tls_context
from warehouse.feeds.contract import RestCall, RestPolicy, RestRequest, ResyncContext
from warehouse.feeds.derive import derive
from warehouse.records import EVENT_RESYNC_FINISHED, EVENT_RESYNC_STARTED, CollectorEvent
from warehouse.redact import Redactor
from warehouse.store.writer import Writer

log = logging.getLogger("warehouse.collect")

# A cooldown is counted from the answer (the vendor counts from the request's arrival, which came
# before it), plus a little for the two clocks' resolution.
COOLDOWN_SPARE_S = 0.02
MAX_REFUSALS_PER_CALL = 8  # 429s for one call in a row: then it waits for the next pass
MAX_ERRORS_KEPT = 5  # error lines in a resync_finished row
MAX_COVERS_LISTED = 100  # ids listed in a resync_started row (the count is always there)


class Pacer:
    """When the next REST call may go: the feed's calls per second overall, the endpoint's cooldown
    since its last answer (counted from the answer, not the request: the vendor counts from when the
    request reached it, which we cannot see), and the delay a 429 named for the endpoint."""

    def __init__(self, calls_per_s: float, clock: Any = time.monotonic) -> None:
        self.interval = 1 / calls_per_s
        self.clock = clock
        self._next_any = 0.0
        self._next: dict[str, float] = {}

    async def wait(self, endpoint: str) -> None:
        while True:
            now = self.clock()
            due = max(self._next_any, self._next.get(endpoint, 0.0))
            if due <= now:
                break
            await asyncio.sleep(due - now)
        self._next_any = now + self.interval

    def answered(self, endpoint: str, cooldown_s: float) -> None:
        wait = cooldown_s + COOLDOWN_SPARE_S if cooldown_s else 0.0
        self._next[endpoint] = max(self._next.get(endpoint, 0.0), self.clock() + wait)

    def refused(self, endpoint: str, delay_s: float) -> None:
        self._next[endpoint] = max(self._next.get(endpoint, 0.0), self.clock() + delay_s)


@dataclass
class _Gap:
    started: datetime | None  # the last frame before it, when the runner knows (None: look it up)
    connected_at: datetime  # when the connection after it opened


@dataclass
class _Pass:
    """One resync pass: its calls and what came of them."""

    id: UUID
    reason: str
    started: float = field(default_factory=time.monotonic)
    calls: int = 0  # answered, any status
    ok: int = 0
    refused: int = 0
    failed: int = 0
    rows: int = 0
    frames: int = 0
    seq: int = 0
    key_refused: bool = False
    not_found: Counter[str] = field(default_factory=Counter)  # 404s per endpoint: the first is logged
    covered: set[str] = field(default_factory=set)
    retry: list[RestRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def note(self, error: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(error[:300])


class Resyncer:
    """The REST side of one feed: heals each gap the runner reports, in a task of its own."""

    def __init__(self, settings: FeedSettings, writer: Writer, metrics: FeedMetrics) -> None:
        self.writer = writer
        self.metrics = metrics
        tuning = settings.tuning
        self.backoff = Backoff(tuning.backoff_initial_s, tuning.backoff_max_s, tuning.backoff_long_s)
        self._pacer = Pacer(1.0)
        self.configure(settings)
        self._pending: list[_Gap] = []
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._first = True
        self._retry_delay = 0.0  # before the next pass, when the last one left calls to make again

    def configure(self, settings: FeedSettings) -> None:
        """Settings from a reloaded config apply from the next pass on."""
        self.settings = settings
        self.source = settings.name
        self.policy: RestPolicy | None = settings.feed.rest_policy(settings.options)
        self.redact = Redactor(list(settings.secrets.values()))
        if self.policy is not None:
            self._pacer.interval = 1 / self.policy.calls_per_s

    @property
    def enabled(self) -> bool:
        return self.policy is not None and self.policy.enabled

    def gap(self, started: datetime | None, connected_at: datetime) -> None:
        """A connection opened after a gap that began with the last frame at `started`."""
        if not self.enabled:
            return
        self._pending.append(_Gap(started, connected_at))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"resync-{self.source}")

    def cancel(self) -> None:
        """Stop the pass in progress now (the feed's claim is gone); aclose() tidies up."""
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    # -- passes ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._passes()
        except Exception:  # a bug must not go unseen, nor stop the feed: the next gap starts afresh
            log.exception("feed %s: resync stopped by an unexpected error; the next gap starts another",
                          self.source)

    async def _passes(self) -> None:
        retry: list[RestRequest] = []
        try:
            while self._pending or retry:
                gaps, self._pending = self._pending, []
                reason = ("start" if self._first else "reconnect") if gaps else "retry"
                requests = list(retry)
                if gaps:
                    try:
                        context = await self._context(gaps)
                    except Exception as exc:  # e.g. the database is down: what to fetch is unknown yet
                        self._pending = gaps + self._pending
                        await self._unplanned(reason, f"cannot read what to fetch from the warehouse:"
                                                      f" {type(exc).__name__}: {exc}")
                        continue
                    self._first = False
                    requests = _unique([*self.settings.feed.resync(self.settings.options, self.settings.secrets,
                                                                   context), *retry])
                else:
                    context = None
                if not requests:
                    continue  # nothing to fetch (a first start with nothing configured)
                done = await self._pass(requests, reason, context)
                retry = done.retry
                if retry:
                    await asyncio.sleep(self._retry_delay)
                else:
                    self.backoff.reset()
        finally:
            self.metrics.resync_running = False

    async def _unplanned(self, reason: str, error: str) -> None:
        pass_id = uuid4()
        delay = self.backoff.next()
        log.warning("feed %s: resync not started: %s; trying again in %.1f s", self.source, error, delay)
        await self._event(pass_id, EVENT_RESYNC_STARTED, {"reason": reason})
        await self._event(pass_id, EVENT_RESYNC_FINISHED, {"error": self.redact.text(error)[:300],
                                                           "retry_in_s": round(delay, 3)})
        await asyncio.sleep(delay)

    async def _context(self, gaps: list[_Gap]) -> ResyncContext:
        assert self.policy is not None
        now = datetime.now(UTC)
        engine = self.writer.engine  # the process's one engine (store/engine.py)
        starts = [gap.started for gap in gaps if gap.started is not None]
        unknown = [gap.connected_at for gap in gaps if gap.started is None]
        if unknown:  # a start: the previous process's last frame
            looked_up = await last_frame_before(engine, self.source, min(unknown))
            if looked_up is not None:
                starts.append(looked_up)
        fixtures: dict[str, tuple[str, ...]] = {}
        if self.policy.fixtures_hours is not None:
            fixtures = await fixtures_seen(engine, self.source, now - timedelta(hours=self.policy.fixtures_hours),
                                           bookmakers=self.policy.bookmakers)
        return ResyncContext(now, min(starts) if starts else None, fixtures)

    async def _pass(self, requests: list[RestRequest], reason: str, context: ResyncContext | None) -> _Pass:
        done = _Pass(uuid4(), reason)
        covers = list(dict.fromkeys(r.covers for r in requests if r.covers))
        await self._event(done.id, EVENT_RESYNC_STARTED, {
            "reason": reason,
            "gap_started": context.gap_started.isoformat() if context and context.gap_started else None,
            "calls_planned": len(requests),
            "endpoints": dict(Counter(r.path for r in requests)),
            "covers": covers[:MAX_COVERS_LISTED], "covers_total": len(covers)})
        log.info("feed %s: resync (%s) of %d calls started", self.source, reason, len(requests))
        self.metrics.resync_running = True
        by_endpoint: dict[str, list[RestRequest]] = {}
        for request in requests:
            by_endpoint.setdefault(request.path, []).append(request)
        try:
            await asyncio.gather(*(self._endpoint(done, queue) for queue in by_endpoint.values()))
        except asyncio.CancelledError:
            await self._finished(done, interrupted="shutdown")
            raise
        finally:
            self.metrics.resync_running = False
        await self._finished(done)
        return done

    async def _finished(self, done: _Pass, interrupted: str | None = None) -> None:
        self.metrics.resyncs += 1
        detail: dict[str, Any] = {
            "reason": done.reason, "calls": done.calls, "ok": done.ok, "refused": done.refused,
            "failed": done.failed, "frames": done.frames, "rows": done.rows, "covered": len(done.covered),
            "seconds": round(time.monotonic() - done.started, 3), "retry": len(done.retry), "errors": done.errors}
        if done.not_found:
            detail["not_found"] = dict(done.not_found)
        if interrupted:
            detail["interrupted"] = interrupted
        elif done.retry:
            self._retry_delay = self.backoff.next(long=done.key_refused)
            detail["retry_in_s"] = round(self._retry_delay, 3)
        await self._event(done.id, EVENT_RESYNC_FINISHED, detail)
        level = logging.WARNING if done.retry or done.failed else logging.INFO
        log.log(level, "feed %s: resync %s: %d calls, %d refused, %d failed, %d rows%s", self.source,
                interrupted or "finished", done.calls, done.refused, done.failed, done.rows,
                f"; {len(done.retry)} calls again in {self._retry_delay:.1f} s" if done.retry and not interrupted
                else "")

    async def _endpoint(self, done: _Pass, queue: Sequence[RestRequest]) -> None:
        for index, request in enumerate(queue):
            if done.key_refused:  # the key is no good: the rest waits for the next pass
                done.retry.extend(queue[index:])
                return
            await self._request(done, request)

    async def _request(self, done: _Pass, request: RestRequest) -> None:
        page = 1
        while True:
            params = request.params
            if request.page_size:
                params = (*params, ("page", str(page)), ("pageSize", str(request.page_size)))
            items = await self._call(done, request, params)
            if items is None:
                return
            if not request.page_size or items < request.page_size:
                break
            page += 1
        if request.covers:
            done.covered.add(request.covers)

    async def _call(self, done: _Pass, request: RestRequest, params: tuple[tuple[str, str], ...]) -> int | None:
        """Make one call (again after each 429); the items its answer held, or None: it failed."""
        metrics = self.metrics
        call = request.call(params)
        shown = self.redact.text(call.event_id)
        for _ in range(MAX_REFUSALS_PER_CALL):
            await self._pacer.wait(request.path)
            sent_at = datetime.now(UTC)
            try:
                url, status, headers, body = await self._get(request, params)
            except httpx.HTTPError as exc:
                self._pacer.answered(request.path, request.cooldown_s)
                self._failed(done, request, f"{shown}: {type(exc).__name__}: {exc}", retry=True)
                return None
            self._pacer.answered(request.path, request.cooldown_s)
            done.calls += 1
            metrics.resync_calls += 1
            if status == 429:
                done.refused += 1
                metrics.resync_refused += 1
                delay = _named_retry(headers, body)
                self._pacer.refused(request.path, named_delay(delay if delay is not None else
                                                              max(request.cooldown_s, 1.0)))
                continue
            if status in (401, 403):
                done.refused += 1
                metrics.resync_refused += 1
                done.key_refused = True
                done.note(f"{shown}: HTTP {status} {self.redact.text(body[:200].decode('utf-8', 'replace'))}")
                done.retry.append(request)
                return None
            if status >= 300:  # 5xx and 408 may pass; another 4xx will not (the call is wrong): not again
                retry = status >= 500 or status == 408
                text = self.redact.text(body[:200].decode("utf-8", "replace"))
                if status == 404:
                    self._not_found(done, request, url, text)
                self._failed(done, request, f"{shown}: HTTP {status} {text}".rstrip(), retry=retry)
                return None
            return await self._store(done, request, call, shown, sent_at, body)
        done.note(f"{shown}: refused (429) {MAX_REFUSALS_PER_CALL} times in a row")
        done.retry.append(request)
        return None

    def _not_found(self, done: _Pass, request: RestRequest, url: str, text: str) -> None:
        """One line per endpoint and pass, naming the URL called: a wrong rest_url makes every call of
        the endpoint a 404, and a vendor that knows no such fixture answers 404 for that one alone."""
        done.not_found[request.path] += 1
        if done.not_found[request.path] == 1:
            answer = " ".join(text.split())[:120]
            # the URL last: a masked query parameter runs to the end of its word
            log.warning("feed %s: resync: HTTP 404 (%s) from %s; if every call of it answers so, rest_url is wrong"
                        " (give the host, or the vendor's versioned base); later 404s of it in this pass are"
                        " counted in resync_finished. URL called: GET %s", self.source, answer, request.path,
                        self.redact.text(url))

    def _failed(self, done: _Pass, request: RestRequest, error: str, *, retry: bool) -> None:
        done.failed += 1
        self.metrics.resync_failed += 1
        done.note(self.redact.text(error))
        if retry:
            done.retry.append(request)

    async def _store(self, done: _Pass, request: RestRequest, call: RestCall, shown: str, sent_at: datetime,
                     body: bytes) -> int | None:
        """The answer as a frame: stored raw and derived by the feed's REST adapter, off the event loop
        (a large answer must not hold the stream up). Its rows are dated when the request was sent."""
        settings = self.settings
        stored = RestCall.stored(call.kind, shown)  # what replay will have: the adapter sees no more
        adapter = settings.feed.rest_adapter(self.source, settings.options, stored)
        done.seq += 1
        derived = await asyncio.to_thread(
            derive, adapter, settings.feed.kind, self.redact.data(body), received_at=sent_at, source=self.source,
            connection_id=done.id, seq=done.seq, event_id=shown, max_frame_bytes=settings.tuning.max_frame_bytes,
            kind=call.kind)
        await self.writer.put(derived.raw, derived.records)
        done.frames += 1
        if derived.output is None:  # quarantined: the same answer would come again
            self.metrics.quarantined += 1
            reason = derived.records[0].reason if derived.records else "quarantined"  # type: ignore[union-attr]
            self._failed(done, request, f"{shown}: answer quarantined: {reason}", retry=False)
            return None
        done.ok += 1
        done.rows += len(derived.records)
        self.metrics.resync_rows += len(derived.records)
        return int((derived.output.detail or {}).get("items", 0))

    async def _get(self, request: RestRequest,
                   params: tuple[tuple[str, str], ...]) -> tuple[str, int, httpx.Headers, bytes]:
        """The URL called, status, headers and body (at most a little over max_frame_bytes: a larger
        answer is quarantined by its size anyway, and memory stays bounded)."""
        if self._client is None:
            assert self.policy is not None
            tuning = self.settings.tuning
            self._client = httpx.AsyncClient(
                verify=tls_context(tuning.ca_file),
                timeout=httpx.Timeout(self.policy.timeout_s, connect=tuning.connect_timeout_s))
        limit = self.settings.tuning.max_frame_bytes
        async with self._client.stream("GET", request.url, params=list(params),
                                       headers=dict(request.headers)) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    break
            return str(response.url), response.status_code, response.headers, bytes(body)

    async def _event(self, pass_id: UUID, event: str, detail: dict[str, Any]) -> None:
        await self.writer.put(None, [CollectorEvent(datetime.now(UTC), self.source, pass_id, event, detail)])


def _named_retry(headers: httpx.Headers, body: bytes) -> float | None:
    """The delay a 429 names: `retryMs` in its JSON body (OddsPapi: `error.retryMs`), else Retry-After."""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError):
        data = orjson.loads(body)
        if isinstance(data, dict):
            inner = data.get("error")
            for holder in (inner if isinstance(inner, dict) else {}, data):
                value = holder.get("retryMs")
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    return float(value) / 1000
    return retry_after_seconds(headers.get("Retry-After"))


def _unique(requests: list[RestRequest]) -> list[RestRequest]:
    """The same call once (a retried one that the new gap's plan holds too)."""
    seen: set[tuple[str, str, tuple[tuple[str, str], ...]]] = set()
    unique = []
    for request in requests:
        key = (request.origin, request.path, request.params)
        if key not in seen:
            seen.add(key)
            unique.append(request)
    return unique
