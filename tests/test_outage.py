"""Database outages: the writer spools, then replays every batch exactly once and in order."""

from __future__ import annotations

import asyncio
import errno
import logging
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import query
from warehouse.config import WriterSettings
from warehouse.records import PriceTick, RawMessage
from warehouse.store.embedded import EmbeddedPostgres
from warehouse.store.spool import Spool
from warehouse.store.writer import Writer

CONN = UUID("7f1c2a9e-0000-4000-8000-000000000001")


@pytest.fixture
def server(private_server: EmbeddedPostgres) -> EmbeddedPostgres:
    return private_server


def unit(seq: int) -> tuple[RawMessage, list[PriceTick]]:
    now = datetime.now(UTC)
    frame = RawMessage(now, "oddspapi", CONN, seq, "price", b'{"p": 1}')
    return frame, [PriceTick(now, "oddspapi", "b", "f", "m", "o", 1.0 + seq / 10_000)]


def fast_retry(spool_dir: Path) -> WriterSettings:
    return WriterSettings(spool_dir=spool_dir, batch_rows=400, retry_initial_s=0.05, retry_max_s=0.3)


def assert_exactly_once_in_order(url: str, count: int, writer: Writer | None = None) -> None:
    seqs = [r[0] for r in query(url, "SELECT seq FROM raw_messages ORDER BY id")]
    # On a failure, what tells a lost batch's story: which frames, what the batch markers say was committed,
    # and what the writer counted.
    missing = sorted(set(range(count)) - set(seqs))
    (batches,) = query(url, "SELECT count(*), sum(frames) FROM ingest_batches")
    assert len(seqs) == count, (f"{len(seqs)} frames stored, {count} sent; missing {len(missing)}:"
                                f" {missing[:3]}…{missing[-3:]}; ingest_batches (count, frames): {batches};"
                                f" {writer.stats if writer else ''}")
    assert seqs == list(range(count)), "frames out of order or duplicated"
    ticks = query(url, "SELECT count(*), count(DISTINCT raw_id) FROM price_ticks p"
                       " JOIN raw_messages r ON r.id = p.raw_id AND r.seq = round((p.price - 1) * 10000)")
    assert ticks == [(count, count)], "derived rows lost, duplicated or linked to the wrong frame"


def test_server_stopped_mid_stream_loses_nothing_and_stores_nothing_twice(
    server: EmbeddedPostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url()

    async def main() -> Writer:
        writer = await Writer(url, fast_retry(tmp_path / "spool")).start()
        seq = 0

        async def produce(until: int) -> None:
            nonlocal seq
            while seq < until:
                await writer.put(*unit(seq))
                seq += 1
                if seq % 100 == 0:
                    await asyncio.sleep(0.002)  # a live feed, not a tight loop

        await produce(3000)
        # Crash-stop the server while frames keep coming: some batches are in flight when it dies.
        stopping = asyncio.create_task(asyncio.to_thread(server.stop, "immediate"))
        await produce(6000)
        await stopping
        await produce(9000)
        await writer.flush()
        assert writer.spool_backlog_batches > 0 and not writer.stats.database_up
        await asyncio.to_thread(server.start)
        await produce(12000)
        assert await writer.wait_replayed(60), "spool did not drain after the database came back"
        await writer.close()
        return writer

    with caplog.at_level(logging.WARNING, logger="warehouse.writer"):
        writer = asyncio.run(asyncio.wait_for(main(), 120))
    assert_exactly_once_in_order(url, 12000, writer)
    assert writer.stats.spooled_batches > 0 and writer.stats.replayed_batches > 0
    assert writer.stats.dropped == 0 and writer.stats.refused == 0
    assert writer.stats.outages == 1, "one outage, however many reconnections failed during it"
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "database unavailable" in messages and "database is back" in messages
    assert not list((tmp_path / "spool").glob("*.spool")), "a drained spool leaves no segment behind"


def test_spool_left_by_an_earlier_run_is_replayed_once_at_start(server: EmbeddedPostgres, tmp_path: Path) -> None:
    url = server.url()
    spool_dir = tmp_path / "spool"

    async def first_run() -> None:
        writer = await Writer(url, fast_retry(spool_dir)).start()
        for seq in range(500):
            await writer.put(*unit(seq))
        await writer.flush()
        server.stop("immediate")
        for seq in range(500, 1500):
            await writer.put(*unit(seq))
        await writer.close(timeout=1)  # database down: the rest stays in the spool

    async def second_run() -> None:
        server.start()
        async with Writer(url, fast_retry(spool_dir)) as writer:
            assert await writer.wait_replayed(60)
            for seq in range(1500, 2000):
                await writer.put(*unit(seq))

    asyncio.run(asyncio.wait_for(first_run(), 60))
    assert Spool(spool_dir).pending_batches > 0
    asyncio.run(asyncio.wait_for(second_run(), 60))
    assert_exactly_once_in_order(url, 2000)


def test_a_batch_whose_commit_outcome_was_unknown_is_not_stored_twice(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The COMMIT reached the server but the answer was lost: the batch sits in the spool too."""
    url = server.url()
    spool_dir = tmp_path / "spool"
    units = [unit(seq) for seq in range(100)]

    async def write() -> None:
        async with Writer(url, fast_retry(spool_dir)) as writer:
            for u in units:
                await writer.put(*u)

    asyncio.run(write())
    committed = [r[0] for r in query(url, "SELECT batch_id FROM ingest_batches")]
    spool = Spool(spool_dir)
    spool.append(committed[0], units)  # what _handle spools when the connection dies during COMMIT
    spool.close()

    async def restart() -> None:
        async with Writer(url, fast_retry(spool_dir)) as writer:
            assert await writer.wait_replayed(30)

    asyncio.run(restart())
    assert_exactly_once_in_order(url, 100)


def test_unwritable_spool_counts_what_was_lost_and_records_it_when_the_database_returns(
    server: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url()

    def disk_full(self, batch_id, units, epochs=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main() -> Writer:
        writer = await Writer(url, fast_retry(tmp_path / "spool")).start()
        server.stop("immediate")
        with monkeypatch.context() as patch:
            patch.setattr(Spool, "append", disk_full)
            for seq in range(50):
                await writer.put(*unit(seq))
            await writer.flush()
        assert writer.stats.dropped == 50
        server.start()
        for seq in range(50, 60):
            await writer.put(*unit(seq))
        await writer.flush()
        await writer.close()
        return writer

    with caplog.at_level(logging.ERROR, logger="warehouse.writer"):
        writer = asyncio.run(asyncio.wait_for(main(), 60))
    assert any("No space left on device" in r.getMessage() and "frames lost" in r.getMessage()
               for r in caplog.records)
    assert query(url, "SELECT min(seq), count(*) FROM raw_messages") == [(50, 10)]
    assert query(url, "SELECT source, event, detail FROM collector_events") == [
        ("oddspapi", "dropped", {"frames": 50, "reason": "spool not writable"})
    ]
    assert writer.stats.frames == 10


def test_a_write_that_hangs_is_treated_as_an_outage_and_replayed_once(db_url: str, tmp_path: Path) -> None:
    """A server that stops answering (here: a lock held too long) must not freeze the collector."""
    import psycopg

    async def main() -> Writer:
        settings = WriterSettings(spool_dir=tmp_path / "spool", statement_timeout_s=0.5, retry_initial_s=0.05,
                                  retry_max_s=0.2)
        async with Writer(db_url, settings) as writer:
            with psycopg.connect(db_url) as blocker:
                blocker.execute("LOCK TABLE price_ticks IN ACCESS EXCLUSIVE MODE")
                for seq in range(200):
                    await writer.put(*unit(seq))
                await writer.flush()  # returns: the stuck batch timed out and went to the spool
                assert writer.spool_backlog_batches > 0 and writer.stats.outages == 1
                while writer.stats.outages < 2:  # its replay meets the lock too, and times out again
                    await asyncio.sleep(0.01)
                assert writer.spool_backlog_batches > 0
            for seq in range(200, 300):
                await writer.put(*unit(seq))
            assert await writer.wait_replayed(30)
        return writer

    writer = asyncio.run(asyncio.wait_for(main(), 60))
    assert writer.stats.spooled_batches > 0
    assert_exactly_once_in_order(db_url, 300)
