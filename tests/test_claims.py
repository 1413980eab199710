"""Claims in PostgreSQL, in one process against a real database: one holder per feed, a clean release
wakes a standby at once, and the writer's fence stores a batch whose feed passed on by the handover
rules — late frames kept, copies of one vendor event left out whichever side commits second
(docs/claims.md). The real processes are in test_failover.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import psycopg

from tests.conftest import query
from tests.tcpproxy import TcpProxy
from warehouse.collect.claims import Claims
from warehouse.config import CollectorSettings, WriterSettings
from warehouse.feeds.contract import Feed
from warehouse.feeds.derive import derive
from warehouse.feeds.registry import FEEDS
from warehouse.records import CollectorEvent, PriceTick, RawMessage
from warehouse.store.embedded import EmbeddedPostgres
from warehouse.store.fence import Fencing
from warehouse.store.writer import Writer

SABA = FEEDS["saba-sse"]


def test_a_feed_that_says_its_frames_carry_an_identity_gives_one() -> None:
    for feed in FEEDS.values():
        assert feed.identifies_events == (type(feed).identity is not Feed.identity), feed.kind
    assert {kind for kind, feed in FEEDS.items() if feed.identifies_events} == {"saba-sse", "mm-ws"}


OPTIONS = {"saba-sse": {"url": "https://saba.invalid/sports/stream/v1/GetEvents", "token_env": "T"},
           "mm-ws": {"url": "wss://mm.invalid/ws/subscribe", "api_key_env": "K"}}


def identity(kind: str, message: dict[str, Any], event_id: str | None = None) -> str | None:
    """A frame's identity, as any collector that received it gives it."""
    feed = FEEDS[kind]
    derived = derive(feed.adapter("x", feed.options(**OPTIONS[kind])), kind, orjson.dumps(message),
                     received_at=datetime.now(UTC), source="x", connection_id=uuid4(), seq=1, event_id=event_id,
                     max_frame_bytes=2**20)
    return feed.identity(derived.raw, derived.records)


def test_a_batchs_units_are_counted_per_source_as_each_one_tells_its_own() -> None:
    """What the writer takes off `pending` when a batch is done: frames in one pass, units without one
    (collector events) by their records' source, a unit with neither as None."""
    at, connection = datetime.now(UTC), uuid4()

    def frame(source: str, seq: int) -> RawMessage:
        return RawMessage(at, source, connection, seq, "price", b"{}")

    tick = PriceTick(at, "mm", "b", "f", "m", "o", 2.0)
    event = CollectorEvent(at, "saba", connection, "connect")
    units: list[Any] = [(frame("oddspapi", 1), [tick]), (None, [event]), (frame("mm", 2), []),
                        (frame("oddspapi", 3), []), (None, []), (None, [event, event])]
    fencing = Fencing()
    assert fencing.sources_of(units) == Counter(map(fencing.source_of, units)) == Counter(
        {"oddspapi": 2, "mm": 1, "saba": 2, None: 1})
    assert fencing.sources_of(units[:1] * 3) == Counter({"oddspapi": 3}) and not fencing.sources_of([])


def test_an_identity_names_one_event_and_only_that() -> None:
    delta = {"status": 0, "message": "Success", "payload": {"events": {"add": [], "change": [], "remove": []},
                                                            "markets": {"add": [], "change": [], "remove": []}}}
    assert identity("saba-sse", delta, "81724") == identity("saba-sse", delta, "81724") is not None
    assert identity("saba-sse", delta, "81725") != identity("saba-sse", delta, "81724")
    snapshot = {**delta, "status": 3, "message": "Reset"}  # carries the id of the delta it follows
    assert identity("saba-sse", snapshot, "81724") != identity("saba-sse", delta, "81724")
    assert identity("saba-sse", delta) is None  # no id, no identity

    def cast(channel: str, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"type": "broadcast", "channel": channel, "event": event, "payload": payload}

    filled = cast("orders", "UPDATE", {"orderId": 7, "orderStatus": "FILLED", "matchedAt": "2026-12-01T10:00:05Z"})
    assert identity("mm-ws", filled) == identity("mm-ws", filled) is not None
    later = cast("orders", "UPDATE", {"orderId": 7, "orderStatus": "FILLED", "matchedAt": "2026-12-01T10:00:06Z"})
    assert identity("mm-ws", later) != identity("mm-ws", filled)
    placed = cast("bets", "INSERT", {"betId": 70, "placedAt": "2026-12-01T10:00:07Z"})
    assert identity("mm-ws", placed) is not None
    # Without a change time, the same bytes may be two changes (a balance that returns to a value): no identity.
    assert identity("mm-ws", cast("accounts", "UPDATE", {"accountId": "a", "balance": 9900})) is None
    assert identity("mm-ws", cast("orders", "UPDATE", {"orderId": 7, "orderStatus": "PLACED"})) is None
    assert identity("mm-ws", {"type": "heartbeat"}) is None


@contextlib.asynccontextmanager
async def member(url: str, tmp_path: Path, name: str, feeds: list[str], **settings: float) -> AsyncIterator[Claims]:
    """A collector process's claims and writer (no feeds run)."""
    writer = await Writer(url, WriterSettings(spool_dir=tmp_path / name)).start()
    claims = Claims(url, CollectorSettings(name=name, **settings), feeds, writer)
    await claims.start()
    try:
        yield claims
    finally:
        await claims.aclose()
        await writer.close()


def test_one_holder_per_feed_and_a_release_wakes_the_standby_at_once(db_url: str, tmp_path: Path) -> None:
    feeds = ["oddspapi", "saba"]

    async def main() -> None:
        # Standbys that poll every 60 s: only the release's NOTIFY can wake them within the bound below.
        async with member(db_url, tmp_path, "a", feeds, poll_s=60) as a:
            held = [await asyncio.wait_for(a.acquired(feed), 20) for feed in feeds]
            assert [(c.took.why, c.epoch, c.took.previous_holder) for c in held] == [("first", 1, None)] * 2
            async with member(db_url, tmp_path, "b", feeds, poll_s=60) as b:
                waiting = [asyncio.ensure_future(b.acquired(feed)) for feed in feeds]
                await asyncio.sleep(1)
                assert not any(w.done() for w in waiting), "a standby took a feed that was held"
                assert query(db_url, "SELECT name, feeds FROM collector_processes ORDER BY name") == [
                    ("a", feeds), ("b", feeds)]
                await a.release(feeds)
                taken = await asyncio.wait_for(asyncio.gather(*waiting), 20)
                assert [(c.took.why, c.epoch, c.took.previous_holder) for c in taken] == [("released", 2, "a")] * 2
                assert b.writer.fencing.epochs == {"oddspapi": 2, "saba": 2}
                assert query(db_url, "SELECT feed, holder, epoch, watch FROM collector_claims ORDER BY feed") == [
                    ("oddspapi", "b", 2, []), ("saba", "b", 2, [])]
        assert query(db_url, "SELECT count(*) FROM collector_processes") == [(0,)]  # each left on closing

    asyncio.run(asyncio.wait_for(main(), 90))


def test_a_holder_cut_off_from_the_database_lets_go_before_its_claim_can_pass(
        pg_server: EmbeddedPostgres, db_url: str, tmp_path: Path) -> None:
    """The link between the holder and the database goes silent (packets dropped): its renewals never
    answer, yet it closes the feed at its local deadline while the claim still has time to run in the
    database — so no standby can have taken it yet — and the standby takes it once it has expired."""
    database = db_url.split("/")[3].split("?")[0]
    with TcpProxy(pg_server.socket_dir / ".s.PGSQL.5432") as proxy:

        async def main() -> None:
            fast = {"claim_ttl_s": 3.0, "poll_s": 0.2}
            async with member(proxy.url(database), tmp_path, "a", ["saba"], **fast) as a, \
                    member(db_url, tmp_path, "b", ["saba"], **fast) as b:
                claim = await asyncio.wait_for(a.acquired("saba"), 20)
                standby = asyncio.ensure_future(b.acquired("saba"))
                while query(db_url, "SELECT solo FROM collector_claims")[0][0]:  # until a has seen b
                    await asyncio.sleep(0.1)
                left: list[timedelta] = []
                claim.on_lost.append(lambda: left.extend(r[0] for r in query(
                    db_url, "SELECT expires_at - now() FROM collector_claims WHERE feed = 'saba'")))
                proxy.cut(blackhole=True)
                taken = await asyncio.wait_for(standby, 30)
                assert claim.lost.is_set() and claim.reason is not None and "could not be renewed" in claim.reason
                assert left and left[0] > timedelta(0), f"let go {left} after the claim had expired"
                assert (taken.took.why, taken.epoch, taken.took.previous_holder) == ("expired", 2, "a")
                assert a.writer.fencing.epochs == {"saba": 1} and "saba" not in a.held
                proxy.restore()
                again = asyncio.ensure_future(a.acquired("saba"))  # back on the database: a stands by
                await asyncio.sleep(1)
                assert not again.done()
                again.cancel()

        asyncio.run(asyncio.wait_for(main(), 90))


# -- the fence ------------------------------------------------------------------------------------

CONNECTION = UUID("5aba0000-0000-4000-8000-000000000001")


def frame(source: str, seq: int, event_id: str | None = None) -> tuple[RawMessage, list[PriceTick]]:
    now = datetime.now(UTC)
    return (RawMessage(now, source, CONNECTION, seq, "status-0", b'{"status": 0}', event_id),
            [PriceTick(now, source, "b", f"f{seq}", "m", "o", 1.5)])


def take(url: str, feed: str, holder: str) -> int:
    """Another process's takeover of `feed`, through the database's own function (after the claim
    is made to expire: as if its holder had stopped renewing it, and been watched doing so)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE collector_claims SET expires_at = now() - interval '1 second' WHERE feed = %s", (feed,))
        row = conn.execute("SELECT taken_epoch FROM warehouse_claims_take(%s, %s, %s, NULL, 10, (SELECT renewed_at"
                           " FROM collector_claims WHERE feed = %s))", (feed, holder, uuid4(), feed)).fetchone()
    assert row is not None
    return int(row[0])


async def fenced_writer(url: str, directory: Path, epochs: dict[str, int], watched: set[str] = frozenset()) -> Writer:
    writer = await Writer(url, WriterSettings(spool_dir=directory)).start()
    writer.fencing.epochs.update(epochs)
    writer.fencing.watched.update(watched)
    writer.fencing.identify = lambda raw, rows: SABA.identity(raw, rows) if raw.source == "saba" else None
    return writer


async def put(writer: Writer, source: str, ids: range) -> None:
    for i in ids:
        await writer.put(*frame(source, i, str(i) if source == "saba" else None))
    await writer.flush()


def test_a_batch_whose_feed_passed_on_is_stored_late_and_marked(db_url: str, tmp_path: Path) -> None:
    """OddsPapi frames have no identity to check: received legitimately, they are stored, and an
    overlap row says which frames of which epoch arrived after the feed had passed on."""
    assert take(db_url, "oddspapi", "a") == 1

    async def main() -> Writer:
        old = await fenced_writer(db_url, tmp_path / "old", {"oddspapi": 1})
        await put(old, "oddspapi", range(0, 3))
        assert take(db_url, "oddspapi", "b") == 2
        await put(old, "oddspapi", range(3, 8))  # the holder cut off: received before its deadline, stored after
        await old.close()
        return old

    old = asyncio.run(asyncio.wait_for(main(), 60))
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY seq") == [(i,) for i in range(8)]
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(8,)]
    (row,) = old.fencing.overlap_rows()  # the claims store these every few seconds
    detail = row.detail
    assert (row.source, row.event) == ("oddspapi", "overlap")
    assert {k: detail[k] for k in ("epoch", "holder_epoch", "late", "frames_stored", "copies_left_out",
                                   "identities_checked")} == {
        "epoch": 1, "holder_epoch": 2, "late": True, "frames_stored": 5, "copies_left_out": 0,
        "identities_checked": True}
    assert old.fencing.late_stored == {"oddspapi": 5}
    assert old.pending("oddspapi", 1) == 0


def test_an_event_received_by_both_holders_is_stored_once_whichever_commits_second(db_url: str,
                                                                                     tmp_path: Path) -> None:
    """Saba's event ids: the old holder's late frames leave out what the new holder stored already,
    and the new holder (watching the feed) leaves out what the late frames stored first."""
    assert take(db_url, "saba", "a") == 1

    async def main() -> tuple[Writer, Writer]:
        old = await fenced_writer(db_url, tmp_path / "old", {"saba": 1})
        await put(old, "saba", range(1, 4))
        assert take(db_url, "saba", "b") == 2
        new = await fenced_writer(db_url, tmp_path / "new", {"saba": 2}, watched={"saba"})
        await put(new, "saba", range(4, 7))  # the new holder resumed after 3: the vendor replays 4…
        await put(old, "saba", range(4, 9))  # the old holder's spool: 4–8, received before its deadline
        await put(new, "saba", range(7, 10))  # …and the replay goes on: 7 and 8 were stored late meanwhile
        for writer in (old, new):
            await writer.close()
        return old, new

    old, new = asyncio.run(asyncio.wait_for(main(), 60))
    assert query(db_url, "SELECT event_id FROM raw_messages ORDER BY event_id::int") == [(str(i),) for i in
                                                                                          range(1, 10)]
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(9,)]  # a copy left out takes its rows along
    assert old.fencing.copies_left_out == {"saba": 3} and old.fencing.late_stored == {"saba": 2}
    assert new.fencing.copies_left_out == {"saba": 2}
    overlaps = [(r.detail["epoch"], r.detail["late"], r.detail["frames_stored"], r.detail["copies_left_out"])
                for writer in (old, new) for r in writer.fencing.overlap_rows()]
    assert overlaps == [(1, True, 2, 3), (2, False, 0, 2)]
    assert query(db_url, "SELECT watch->0->>'epoch', watch->0->>'settled' FROM collector_claims"
                         " WHERE feed = 'saba'") == [("1", "false")]


def test_a_watch_ends_once_the_late_frames_are_all_in_and_the_holder_is_past_the_copies(db_url: str,
                                                                                       tmp_path: Path) -> None:
    assert take(db_url, "saba", "a") == 1
    assert take(db_url, "saba", "b") == 2

    async def main() -> Writer:
        new = await fenced_writer(db_url, tmp_path / "new", {"saba": 2}, watched={"saba"})
        await put(new, "saba", range(1, 3))
        assert "saba" in new.fencing.watched  # epoch 1's late frames may still come
        with psycopg.connect(db_url, autocommit=True) as conn:  # …and now they are all in (the claims settle it)
            conn.execute("UPDATE collector_claims SET watch = jsonb_set(watch, '{0,settled}', 'true')"
                         " WHERE feed = 'saba'")
        await put(new, "saba", range(3, 5))
        await new.close()
        return new

    new = asyncio.run(asyncio.wait_for(main(), 60))
    assert "saba" not in new.fencing.watched
    assert query(db_url, "SELECT watch FROM collector_claims WHERE feed = 'saba'") == [([],)]
    assert query(db_url, "SELECT count(*) FROM collector_handover_keys") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM raw_messages") == [(4,)]


def test_a_release_while_a_renewal_is_on_its_way_still_releases(db_url: str, tmp_path: Path) -> None:
    """The claims' own loop and a clean stop's release share one connection: the release waits for the
    renewal in flight instead of failing (which left the claim to expire, 10 s without a holder)."""

    async def main() -> None:
        async with member(db_url, tmp_path, "a", ["saba"], claim_ttl_s=30) as a:
            await asyncio.wait_for(a.acquired("saba"), 20)
            with psycopg.connect(db_url) as blocker:  # holds the claim's row: the next renewal waits for it
                blocker.execute("SELECT 1 FROM collector_claims WHERE feed = 'saba' FOR UPDATE")
                deadline = asyncio.get_running_loop().time() + 30
                waiting = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND wait_event_type = 'Lock' AND query LIKE '%UPDATE collector_claims%'")
                while not query(db_url, waiting)[0][0]:
                    assert asyncio.get_running_loop().time() < deadline, "no renewal came"
                    await asyncio.sleep(0.1)
                releasing = asyncio.ensure_future(a.release(["saba"]))
                await asyncio.sleep(0.5)  # (the release is under way while the renewal waits)
                blocker.commit()
            await asyncio.wait_for(releasing, 20)
            assert query(db_url, "SELECT holder, holder_process FROM collector_claims") == [("a", None)]

    asyncio.run(asyncio.wait_for(main(), 90))
