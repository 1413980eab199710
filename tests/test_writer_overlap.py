"""The writer's second connection: the next batch's rows go while the batch before commits, and still
nothing commits out of order, nothing is lost or stored twice when either one fails.

Each test holds the first batch's COMMIT message on a lock (`ingest_batches`, the table it writes last),
so that the second batch is sent while the first has not committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import query
from tests.test_writer import T0, raw, run, settings
from warehouse.records import PriceTick
from warehouse.store.writer import Writer

# The writer's sessions (application_name "warehouse"), by state, and the one waiting for the held lock.
SESSIONS = "SELECT state, wait_event_type FROM pg_stat_activity WHERE application_name = 'warehouse'"
HELD = "SELECT count(*) FROM pg_locks WHERE relation = 'ingest_batches'::regclass AND NOT granted"


def tick(seq: int, price: object = 2.0, at: datetime = T0) -> PriceTick:
    return PriceTick(at, "oddspapi", "b", "f", "m", str(seq), price)  # type: ignore[arg-type]


class Held:
    """`ingest_batches` locked from another session: a batch's COPY goes through, its COMMIT message waits."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url)
        self.conn.execute("LOCK TABLE ingest_batches IN ACCESS EXCLUSIVE MODE")

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


@pytest.fixture
def holders() -> Iterator[list[Held]]:
    """Locks held from other sessions, released at the end whatever happened."""
    holders: list[Held] = []
    yield holders
    for holder in holders:
        if not holder.conn.closed:
            holder.release()


async def until(url: str, sql: str, want: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while query(url, sql) != want:
            await asyncio.sleep(0.02)


async def first_held_second_sent(writer: Writer, url: str, holders: list[Held], second: list) -> None:
    """Batch 1 (frames 0, 1) waits to commit; batch 2 (frames 2, 3, rows `second`) is sent meanwhile."""
    holders.append(Held(url))
    await writer.put(raw(0), [tick(0)])  # two rows a batch (batch_rows=4): one full batch
    await writer.put(raw(1), [tick(1)])
    await until(url, HELD, [(1,)])
    await writer.put(raw(2), [second[0]])
    await writer.put(raw(3), [second[1]])


def test_the_next_batch_is_sent_while_the_first_commits_and_commits_after_it(db_url: str, spool_dir: Path,
                                                                             holders: list) -> None:
    async def main() -> Writer:
        async with Writer(db_url, settings(spool_dir, batch_rows=4, flush_interval_s=30)) as writer:
            await first_held_second_sent(writer, db_url, holders, [tick(2), tick(3)])
            # The second batch is in, on a second session, waiting for the first to commit: not before it.
            await until(db_url, SESSIONS + " AND state = 'idle in transaction'", [("idle in transaction", "Client")])
            assert sorted(query(db_url, SESSIONS)) == [("active", "Lock"), ("idle in transaction", "Client")]
            assert writer.connections_open == 2
            assert query(db_url, "SELECT count(*) FROM raw_messages") == [(0,)]
            holders[0].release()
            await writer.flush()
        return writer

    writer = run(main())
    assert writer.stats.batches == 2 and writer.stats.outages == 0 and writer.stats.spooled_batches == 0
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(0,), (1,), (2,), (3,)]
    assert query(db_url, "SELECT r.seq::text = p.outcome_id FROM price_ticks p JOIN raw_messages r ON r.id = p.raw_id"
                 ) == [(True,)] * 4
    assert query(db_url, "SELECT count(*), sum(frames), sum(rows) FROM ingest_batches") == [(2, 4, 4)]


def test_with_one_connection_the_next_batch_waits_in_the_queue(db_url: str, spool_dir: Path,
                                                              holders: list) -> None:
    async def main() -> Writer:
        one = settings(spool_dir, batch_rows=4, flush_interval_s=30, connections=1)
        async with Writer(db_url, one) as writer:
            await first_held_second_sent(writer, db_url, holders, [tick(2), tick(3)])
            await asyncio.sleep(0.5)  # room for a second session to show up, if one were opened
            assert query(db_url, SESSIONS) == [("active", "Lock")]
            assert writer.queued == 2 and writer.connections_open == 1
            holders[0].release()
            await writer.flush()
        return writer

    writer = run(main())
    assert writer.stats.batches == 2
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(0,), (1,), (2,), (3,)]


def test_the_first_batch_lost_with_its_session_takes_the_second_to_the_spool_in_order(
        db_url: str, spool_dir: Path, holders: list) -> None:
    """The first batch's session ends before its COMMIT: both batches go to the spool, the first first, and
    are replayed in that order once the database answers again: every frame once."""

    async def main() -> Writer:
        quick = settings(spool_dir, batch_rows=4, flush_interval_s=30, retry_initial_s=0.05)
        async with Writer(db_url, quick) as writer:
            await first_held_second_sent(writer, db_url, holders, [tick(2), tick(3)])
            await until(db_url, SESSIONS + " AND state = 'idle in transaction'", [("idle in transaction", "Client")])
            query(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = 'warehouse' AND wait_event_type = 'Lock'")
            holders[0].release()
            await writer.flush()
            assert await writer.wait_replayed(30)
        return writer

    writer = run(main())
    assert writer.stats.outages == 1 and writer.stats.spooled_batches == 2 and writer.stats.replayed_batches == 2
    assert writer.stats.dropped == 0
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(0,), (1,), (2,), (3,)]
    assert query(db_url, "SELECT count(*), count(DISTINCT outcome_id) FROM price_ticks") == [(4, 4)]


def test_a_bad_record_in_the_second_batch_is_isolated_on_its_own_session_after_the_first_commits(
        db_url: str, spool_dir: Path, holders: list, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Writer:
        async with Writer(db_url, settings(spool_dir, batch_rows=4, flush_interval_s=30)) as writer:
            bad = tick(3, price="2.10")  # a price as text: a parser bug upstream
            await first_held_second_sent(writer, db_url, holders, [tick(2), bad])
            await asyncio.sleep(0.3)  # the second batch's COPY fails meanwhile; its bisection waits for the first
            assert query(db_url, "SELECT count(*) FROM raw_messages") == [(0,)]
            holders[0].release()
            await writer.flush()
        return writer

    with caplog.at_level(logging.ERROR, logger="warehouse.writer"):
        writer = run(main())
    assert writer.stats.refused == 1 and writer.stats.outages == 0 and writer.stats.dropped == 0
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(0,), (1,), (2,), (3,)]
    assert query(db_url, "SELECT outcome_id FROM price_ticks ORDER BY raw_id") == [("0",), ("1",), ("2",)]
    (reason, seq), = query(db_url, "SELECT q.reason, r.seq FROM quarantine q JOIN raw_messages r ON r.id = q.raw_id")
    assert seq == 3 and reason.startswith("PriceTick refused: TypeError")
    assert [r.getMessage() for r in caplog.records if "another operation" in r.getMessage()] == []


def test_a_second_connection_refused_leaves_the_writer_on_one(db_url: str, spool_dir: Path,
                                                              holders: list,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A role allowed one session (or a server at max_connections): one warning, the batches in order."""
    with psycopg.connect(db_url, autocommit=True) as conn:  # roles are the cluster's: made once
        conn.execute("DO $$ BEGIN CREATE ROLE owh_one_session LOGIN CONNECTION LIMIT 1 IN ROLE warehouse_writer;"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    one_session = db_url.replace("postgres@", "owh_one_session@")

    async def main() -> Writer:
        async with Writer(one_session, settings(spool_dir, batch_rows=4, flush_interval_s=30)) as writer:
            await first_held_second_sent(writer, db_url, holders, [tick(2), tick(3)])
            await asyncio.sleep(0.3)
            holders[0].release()
            await writer.flush()
        return writer

    with caplog.at_level(logging.WARNING, logger="warehouse.writer"):
        writer = run(main())
    assert writer.stats.batches == 2 and writer.stats.outages == 0
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(0,), (1,), (2,), (3,)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "a second connection to the database could not be opened" in warnings[0]
    assert "writing on one" in warnings[0] and "owh_one_session" in warnings[0]
    assert "set [writer] connections = 1" in warnings[0]


async def second_bad_third_waiting(writer: Writer, url: str, holders: list[Held], at: datetime) -> None:
    """Batch 1 (day T0) waits to commit; batch 2 (rows at `at`, one refused) fails its COPY and waits for
    batch 1; batch 3 (rows at `at`) is sent behind them; then batch 1 may commit."""
    holders.append(Held(url))
    await writer.put(raw(0), [tick(0)])
    await writer.put(raw(1), [tick(1)])
    await until(url, HELD, [(1,)])
    await writer.put(raw(2, at=at), [tick(2, at=at)])
    await writer.put(raw(3, at=at), [tick(3, price="2.10", at=at)])
    await asyncio.sleep(0.5)
    await writer.put(raw(4, at=at), [tick(4, at=at)])
    await writer.put(raw(5, at=at), [tick(5, at=at)])
    holders[0].release()


def test_a_batch_bisected_in_a_new_chunk_does_not_wait_for_the_batch_behind_it(timescale_url: str, spool_dir: Path,
                                                                              holders: list) -> None:
    """TimescaleDB: batch 2's rows are the first of a new day's chunk. After its ROLLBACK batch 3's COPY makes
    that chunk and holds its lock; batch 2's bisection needs it. Batch 3 must leave its transaction while
    batch 2 commits its way, or both wait for each other until the statement timeout (an outage)."""

    async def main() -> Writer:
        quick = settings(spool_dir, batch_rows=4, flush_interval_s=30, statement_timeout_s=8, retry_initial_s=0.05)
        async with Writer(timescale_url, quick) as writer:
            await second_bad_third_waiting(writer, timescale_url, holders, T0 + timedelta(days=1))
            await writer.flush()
        return writer

    writer = run(main())
    assert query(timescale_url, "SELECT seq FROM raw_messages ORDER BY id") == [(i,) for i in range(6)]
    assert writer.stats.refused == 1
    assert writer.stats.outages == 0 and writer.stats.spooled_batches == 0, writer.stats


def test_midnight_during_a_bisection_makes_the_partition_without_waiting_for_the_batch_behind(
        db_url: str, spool_dir: Path, holders: list) -> None:
    """The UTC day turns while batch 2's bad unit is isolated: the new day's partition is made on its
    connection, which waits for the locks of an open COPY — batch 3 must not hold one while it waits."""
    far = (datetime.now(UTC).date() + timedelta(days=2)).strftime("%Y%m%d")  # the partition midnight adds

    class Midnight(logging.Handler):  # the refusal's log line: the clock passes midnight now
        def __init__(self, writer: Writer) -> None:
            super().__init__()
            self.writer = writer

        def emit(self, record: logging.LogRecord) -> None:
            if "refused" in record.getMessage():
                self.writer._connection._partition_day = -1

    async def main() -> Writer:
        async with Writer(db_url, settings(spool_dir, batch_rows=4, flush_interval_s=30)) as writer:
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(f"DROP TABLE raw_messages_p{far}")
            handler = Midnight(writer)
            logging.getLogger("warehouse.writer").addHandler(handler)
            try:
                await second_bad_third_waiting(writer, db_url, holders, T0)
                await asyncio.wait_for(asyncio.shield(writer.flush()), 20)
            finally:
                logging.getLogger("warehouse.writer").removeHandler(handler)
        return writer

    writer = run(main())
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(i,) for i in range(6)]
    assert writer.stats.outages == 0 and writer.stats.refused == 1
    assert query(db_url, f"SELECT to_regclass('raw_messages_p{far}') IS NOT NULL") == [(True,)]
