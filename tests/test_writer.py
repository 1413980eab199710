"""The writer against a real PostgreSQL: values, order, bad input, backpressure, partitions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest

from tests.conftest import query
from warehouse.config import WriterSettings
from warehouse.records import (
    TABLE_OF,
    AccountChange,
    BetChange,
    CollectorEvent,
    EmergencyEvent,
    FixtureChange,
    MarketChange,
    OrderChange,
    PriceTick,
    Quarantine,
    RawMessage,
    ScoreChange,
)
from warehouse.store.writer import Writer

T0 = datetime(2026, 11, 21, 10, 30, 0, 123456, tzinfo=UTC)
CONN = UUID("0b7e7d3c-5f7c-4a8e-9d2f-111111111111")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def settings(spool_dir: Path, **overrides) -> WriterSettings:
    return WriterSettings(spool_dir=spool_dir, **overrides)


def raw(seq: int, payload: bytes | None = b'{"k": 1}', at: datetime = T0, source: str = "oddspapi") -> RawMessage:
    return RawMessage(at, source, CONN, seq, "price", payload, event_id=f"e{seq}")


def sample_records(at: datetime) -> list:
    """One record of every type, with values that catch lossy round trips."""
    return [
        PriceTick(at, "oddspapi", "starcasino.be", "id1100097561092987", "111", "111", 1.345, player_id="0",
                  line=Decimal("-0.25"), side="back", active=True, status="1", max_stake=Decimal("1500.50"),
                  source_ts=at - timedelta(microseconds=7), attrs={"bookmakerOutcomeId": "2535416646",
                                                                   "exchangeMeta": {}, "betslip": None}),
        MarketChange(at, "saba", "38255274", "274175476", "change", bookmaker="saba", status="suspend",
                     source_ts=None, attrs={"maxBet": 500.0, "isLive": True}),
        FixtureChange(at, "oddspapi", "id2704726161008023", "change", bookmaker=None,
                      start_time=datetime(2026, 11, 22, 18, 0, tzinfo=UTC), status="1",
                      source_ts=at, changes={"statusId": 1, "seasonId": None}),
        ScoreChange(at, "mm", "id1000000861624412", period="下半场", home_score=2, away_score=1, minute=67,
                    live=True, status="1", attrs={"period1Home": 1}),
        OrderChange(at, "mm", "UPDATE", "123", fixture_id="id1000000861624412", outcome_id="161",
                    exchange="polymarket", exchange_order_id="0x1a2b3c", order_status="FILLED",
                    matched_status="FULLY_MATCHED", price=Decimal("0.45"), stake=Decimal("100.0"),
                    matched_stake=Decimal("100.0"), source_ts=at,
                    payload={"orderId": 123, "orderStatus": "FILLED"}, old={"matchedStake": 0}),
        BetChange(at, "mm", "INSERT", "456", order_id="123", bookmaker="vertex", bet_status="placed",
                  price=Decimal("1.808"), stake=Decimal("100.0"), payload={"receivedData": {"status": "U"}}),
        AccountChange(at, "mm", "UPDATE", account_id="acc-7", payload={"balance": 1234.5}, old={"balance": 1000}),
        EmergencyEvent(at, "mm", True, reason="手动触发", source_ts=at, payload={"emergency": True}),
        CollectorEvent(at, "mm", CONN, "connect", {"url": "wss://example/ws?apiKey=***"}),
        Quarantine(at, "ckex", CONN, "not JSON: Expecting value", "{oops"),
    ]


# Not what jsonb would print back: its spacing, key order (and duplicate key), number spellings.
FRAME = '{"price" : 1.50,"fixtureId":"id1", "nested": {"a": [1, null]}, "name": "é", "price": 1.5e0}'.encode()


def test_every_record_type_round_trips_unchanged(storage_url: str, spool_dir: Path) -> None:
    records = sample_records(T0)
    db_url = storage_url

    async def main() -> None:
        async with Writer(db_url, settings(spool_dir)) as writer:
            await writer.put(raw(1, FRAME), records)

    run(main())
    (raw_id, payload, seq, event_id, conn_id, received_at), = query(
        db_url, "SELECT id, payload::text, seq, event_id, connection_id, received_at FROM raw_messages")
    assert payload.encode() == FRAME  # the frame as received, byte for byte: spacing, key order, 1.50, é
    assert query(db_url, "SELECT payload->'nested'->'a'->>0, payload->>'name' FROM raw_messages") == [("1", "é")]
    assert (seq, event_id, conn_id, received_at) == (1, "e1", CONN, T0)
    for record in records:
        table = TABLE_OF[type(record)]
        columns = ", ".join(record._fields)
        rows = query(storage_url, f"SELECT raw_id, {columns} FROM {table}")
        assert rows == [(raw_id, *record)], table
    assert query(storage_url, "SELECT frames, rows FROM ingest_batches") == [(1, 10)]


def test_order_is_kept_and_every_frame_lands_once(db_url: str, spool_dir: Path) -> None:
    async def producer(writer: Writer, source: str) -> None:
        for seq in range(3000):
            tick = PriceTick(T0, source, "b", "f", "m", str(seq % 3), 1.5 + seq / 1000)
            await writer.put(raw(seq, source=source), [tick])

    async def main() -> None:
        async with Writer(db_url, settings(spool_dir, batch_rows=500)) as writer:
            await asyncio.gather(producer(writer, "a"), producer(writer, "b"))

    run(main())
    for source in ("a", "b"):
        seqs = [r[0] for r in query(db_url, "SELECT seq FROM raw_messages WHERE source = %s ORDER BY id", source)]
        assert seqs == list(range(3000))
        linked = query(db_url, "SELECT count(*) FROM price_ticks p JOIN raw_messages r ON r.id = p.raw_id"
                               " WHERE p.source = %s AND r.source = %s", source, source)
        assert linked == [(3000,)]


def test_a_record_of_the_wrong_type_is_refused_without_poisoning_its_batch(
    db_url: str, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = [PriceTick(T0, "saba", "b", "f", "m", str(i), 2.0) for i in range(50)]
    bad = PriceTick(T0, "saba", "b", "f", "m", "x", "2.10")  # price as a string: a parser bug upstream

    async def main() -> Writer:
        async with Writer(db_url, settings(spool_dir, flush_interval_s=0.5)) as writer:
            for i, tick in enumerate(good[:25]):
                await writer.put(raw(i, source="saba"), [tick])
            await writer.put(raw(99, source="saba"), [bad])
            for i, tick in enumerate(good[25:], 25):
                await writer.put(raw(i, source="saba"), [tick])
        return writer

    with caplog.at_level(logging.ERROR, logger="warehouse.writer"):
        writer = run(main())
    assert writer.stats.refused == 1 and writer.stats.dropped == 0
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(50,)]
    assert query(db_url, "SELECT count(*) FROM price_ticks WHERE outcome_id = 'x'") == [(0,)]
    # the frame is still stored, and the quarantine row says what was wrong and points at it
    (reason, frame, raw_seq), = query(db_url, "SELECT q.reason, q.frame, r.seq FROM quarantine q"
                                              " JOIN raw_messages r ON r.id = q.raw_id")
    assert raw_seq == 99 and frame == '{"k": 1}'
    assert reason.startswith("PriceTick refused: TypeError") and "\n" not in reason
    assert query(db_url, "SELECT count(*) FROM raw_messages") == [(51,)]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "PriceTick refused" in errors[0] and "saba" in errors[0]


def test_the_database_going_away_while_a_refusal_is_stored_is_an_outage_not_a_loss(db_url: str,
                                                                                      spool_dir: Path) -> None:
    """The quarantine row of a refused record is the first write after the refusal: the server ends the
    writer's session right there (once). The batch is spooled and replayed: every frame once, one
    quarantine row, nothing stored twice (halves that committed before the outage are skipped)."""
    with psycopg.connect(db_url, autocommit=True) as conn:  # as the owner: a test-only trigger
        conn.execute("CREATE SEQUENCE end_session_once")
        conn.execute("CREATE FUNCTION end_session_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " IF nextval('end_session_once') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid());"
                     " END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER end_session_once BEFORE INSERT ON quarantine"
                     " FOR EACH ROW EXECUTE FUNCTION end_session_once()")
    good = [PriceTick(T0, "saba", "b", "f", "m", str(i), 2.0) for i in range(8)]
    bad = PriceTick(T0, "saba", "b", "f", "m", "x", "2.10")

    async def main() -> Writer:
        async with Writer(db_url, settings(spool_dir, flush_interval_s=0.5, retry_initial_s=0.05)) as writer:
            for i, tick in enumerate(good[:4]):
                await writer.put(raw(i, source="saba"), [tick])
            await writer.put(raw(99, source="saba"), [bad])
            for i, tick in enumerate(good[4:], 4):
                await writer.put(raw(i, source="saba"), [tick])
            await writer.flush()
            await writer.wait_replayed(30)
        return writer

    writer = run(main())
    assert writer.stats.outages >= 1 and writer.stats.dropped == 0
    assert query(db_url, "SELECT seq, count(*) FROM raw_messages GROUP BY seq ORDER BY seq") == [
        *((i, 1) for i in range(8)), (99, 1)]
    assert query(db_url, "SELECT count(*), count(DISTINCT outcome_id) FROM price_ticks") == [(8, 8)]
    (reason, raw_seq), = query(db_url, "SELECT q.reason, r.seq FROM quarantine q"
                                       " JOIN raw_messages r ON r.id = q.raw_id")
    assert raw_seq == 99 and reason.startswith("PriceTick refused: TypeError")


def test_a_frame_postgres_cannot_store_is_kept_with_a_null_payload(db_url: str, spool_dir: Path) -> None:
    async def main() -> None:
        async with Writer(db_url, settings(spool_dir)) as writer:
            await writer.put(raw(1, b'{"name": "a\\u0000b"}'), [])  # jsonb refused \u0000; json keeps the text
            await writer.put(raw(2, b'{"name": '), [])  # not JSON: a bug upstream (frames are parsed first)
            await writer.put(raw(3), [])

    run(main())
    assert query(db_url, "SELECT seq, payload::text FROM raw_messages ORDER BY seq") == [
        (1, '{"name": "a\\u0000b"}'), (2, None), (3, '{"k": 1}')]
    (frame,), = query(db_url, "SELECT frame FROM quarantine")
    assert frame == '{"name": '


def test_a_frame_from_a_clock_that_lost_its_time_is_quarantined_and_the_rest_commits(db_url: str,
                                                                                     spool_dir: Path) -> None:
    """received_at outside the database's window (a board booting at 1970): the frame cannot be stored
    as received, so its text goes to a quarantine row (dated now) saying why; its batch commits."""
    async def main() -> None:
        async with Writer(db_url, settings(spool_dir, flush_interval_s=0.5)) as writer:
            await writer.put(raw(1), [PriceTick(T0, "oddspapi", "b", "f", "m", "o", 2.0)])
            at_1970 = datetime(1970, 1, 1, 0, 0, 7, tzinfo=UTC)
            await writer.put(raw(2, b'{"k": 1970}', at=at_1970),
                             [PriceTick(at_1970, "oddspapi", "b", "f", "m", "o", 2.5)])
            await writer.put(raw(3), [])

    run(main())
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY seq") == [(1,), (3,)]
    assert query(db_url, "SELECT price FROM price_ticks") == [(2.0,)]
    (reason, frame, raw_id, at), = query(db_url, "SELECT reason, frame, raw_id, received_at FROM quarantine")
    assert frame == '{"k": 1970}' and raw_id is None and at > T0
    assert "raw_messages_received_at_window" in reason


def test_something_that_is_not_a_record_is_refused(db_url: str, spool_dir: Path) -> None:
    async def main() -> None:
        async with Writer(db_url, settings(spool_dir)) as writer:
            await writer.put(raw(1), [{"price": 1.5}])  # a dict instead of a record

    run(main())
    assert query(db_url, "SELECT count(*) FROM raw_messages") == [(1,)]
    (reason,), = query(db_url, "SELECT reason FROM quarantine")
    assert "not a record type: dict" in reason


def test_a_full_queue_makes_producers_wait_instead_of_growing(db_url: str, spool_dir: Path) -> None:
    async def main() -> None:
        async with Writer(db_url, settings(spool_dir, queue_units=10, batch_rows=4)) as writer:
            with psycopg.connect(db_url) as blocker:  # hold a lock the writer's COPY must wait for
                blocker.execute("LOCK TABLE raw_messages IN ACCESS EXCLUSIVE MODE")
                for seq in range(30):
                    try:
                        await asyncio.wait_for(writer.put(raw(seq), []), 0.5)
                    except TimeoutError:
                        break
                assert 10 <= seq < 30, "put() should block once the queue is full"
                assert writer.queued == 10
                blocker.rollback()
            await writer.put(raw(seq), [])
            for rest in range(seq + 1, 30):
                await writer.put(raw(rest), [])

    run(main())
    assert query(db_url, "SELECT count(*), count(DISTINCT seq) FROM raw_messages") == [(30, 30)]


WAITING_FOR_THE_LOCK = "SELECT count(*) FROM pg_locks WHERE relation = 'raw_messages'::regclass AND NOT granted"


def test_frames_that_queued_during_a_commit_go_at_once_not_after_the_flush_interval(
    db_url: str, spool_dir: Path
) -> None:
    """The flush interval gathers frames when the writer is idle; frames that waited through the
    previous commit have waited long enough (this took 10 ms off every frame at 5,000 frames/s)."""

    async def main() -> None:
        committed: dict[int, asyncio.Event] = {seq: asyncio.Event() for seq in range(3)}

        def on_commit(units: list) -> None:
            for unit, _rows in units:
                committed[unit.seq].set()

        # Batches of two rows; a lone frame on an idle writer would wait 30 s for company.
        slow = settings(spool_dir, flush_interval_s=30, batch_rows=2)
        async with Writer(db_url, slow, on_commit=on_commit) as writer:
            with psycopg.connect(db_url) as blocker:  # the first batch's COPY waits for this lock
                blocker.execute("LOCK TABLE raw_messages IN ACCESS EXCLUSIVE MODE")
                await writer.put(raw(0), [])
                await writer.put(raw(1), [])  # a full batch: its commit starts, and waits
                while not blocker.execute(WAITING_FOR_THE_LOCK).fetchone()[0]:
                    await asyncio.sleep(0.01)
                await writer.put(raw(2), [])  # queues up behind that commit
                blocker.rollback()
            await asyncio.wait_for(committed[2].wait(), 10)
            assert all(event.is_set() for event in committed.values())

    run(main())
    assert query(db_url, "SELECT seq FROM raw_messages ORDER BY id") == [(0,), (1,), (2,)]


def test_close_flushes_everything(db_url: str, spool_dir: Path) -> None:
    async def main() -> None:
        writer = await Writer(db_url, settings(spool_dir, flush_interval_s=10, batch_rows=10**6)).start()
        for seq in range(1000):
            await writer.put(raw(seq), [])
        await writer.close()

    run(main())
    assert query(db_url, "SELECT count(*) FROM raw_messages") == [(1000,)]


def test_rows_land_in_their_utc_day_around_midnight_and_far_away(storage_url: str, storage: str,
                                                                 spool_dir: Path) -> None:
    """Native: a daily partition, or the default one for days without (far past, far future).
    TimescaleDB: a chunk holding exactly the row's UTC day (export and retention rely on it)."""
    midnight = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
    times = {
        "before": midnight - timedelta(microseconds=1),
        "at": midnight,
        "past": datetime(2000, 1, 1, tzinfo=UTC),  # the window the database keeps received_at in (schema.py)
        "future": datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    }

    async def main() -> None:
        async with Writer(storage_url, settings(spool_dir)) as writer:
            for i, (label, at) in enumerate(times.items()):
                await writer.put(raw(i, at=at), [CollectorEvent(at, "oddspapi", CONN, label)])

    run(main())
    received = dict(query(storage_url, "SELECT event, received_at FROM collector_events"))
    assert received == times
    if storage == "timescaledb":
        chunks = {event: (start, end) for event, start, end in query(
            storage_url, "SELECT e.event, c.range_start, c.range_end FROM collector_events e"
                         " JOIN timescaledb_information.chunks c"
                         " ON format('%I.%I', c.chunk_schema, c.chunk_name)::regclass = e.tableoid")}
        assert chunks == {label: (day, day + timedelta(days=1)) for label, day in [
            ("before", midnight - timedelta(days=1)), ("at", midnight), ("past", times["past"]),
            ("future", datetime(2099, 12, 31, tzinfo=UTC))]}
        return
    rows = dict(query(storage_url, "SELECT event, tableoid::regclass::text FROM collector_events"))
    assert rows["before"] == f"collector_events_p{midnight - timedelta(days=1):%Y%m%d}"
    assert rows["at"] == f"collector_events_p{midnight:%Y%m%d}"
    assert rows["past"] == rows["future"] == "collector_events_default"


def test_a_partition_for_a_day_already_in_the_default_is_skipped_not_an_error(storage_url: str, storage: str) -> None:
    far = datetime(2031, 1, 1, 12, tzinfo=UTC)
    with psycopg.connect(storage_url, autocommit=True) as conn:
        conn.execute("INSERT INTO quarantine (received_at, source, reason) VALUES (%s, 's', 'r')", (far,))
        created = conn.execute("SELECT warehouse_ensure_partitions('2031-01-01', 1)").fetchone()[0]
        if storage == "timescaledb":  # chunks come with the rows; nothing to make ahead
            assert created == 0
            assert conn.execute("SELECT count(*) FROM timescaledb_information.chunks").fetchone() == (1,)
            return
        assert created == 10  # every fact table but quarantine, whose default already holds that day
        assert conn.execute("SELECT tableoid::regclass::text FROM quarantine").fetchall() == [("quarantine_default",)]


def test_writer_works_as_the_insert_only_role(storage_url: str, spool_dir: Path) -> None:
    role_url = storage_url.replace("postgres@", "owh_test_writer@")
    with psycopg.connect(storage_url, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN CREATE ROLE owh_test_writer LOGIN IN ROLE warehouse_writer;"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")

    async def main() -> Writer:
        async with Writer(role_url, settings(spool_dir)) as writer:
            await writer.put(raw(1), sample_records(T0))
        return writer

    writer = run(main())
    assert writer.stats.frames == 1 and writer.stats.refused == 0
    for table in TABLE_OF.values():  # on TimescaleDB the writer role made each table's chunk for T0's day
        assert query(storage_url, f"SELECT count(*) FROM {table}") == [(1,)], table
    assert query(storage_url, "SELECT count(*) FROM quarantine") == [(1,)]  # the sample's own quarantine row


def test_unique_connection_ids_are_kept_as_uuids(db_url: str, spool_dir: Path) -> None:
    ids = [uuid4() for _ in range(3)]

    async def main() -> None:
        async with Writer(db_url, settings(spool_dir)) as writer:
            for i, cid in enumerate(ids):
                await writer.put(raw(i)._replace(connection_id=cid), [])

    run(main())
    assert [r[0] for r in query(db_url, "SELECT connection_id FROM raw_messages ORDER BY seq")] == ids


def test_a_commit_message_counts_only_when_postgresql_answers_commit(db_url: str) -> None:
    """The writer counts a batch committed only on PostgreSQL's COMMIT: a transaction that had failed answers
    ROLLBACK to the same message without an error, and asyncpg ends a call whose connection another task
    closed with no answer at all (docs/reliability.md, "Open: …"): both take the outage path."""
    import asyncpg

    from warehouse.store import writer as writing

    async def answers() -> list[str]:
        conn = await asyncpg.connect(db_url)
        try:
            found = []
            for failing in (False, True):
                await conn.execute("BEGIN")
                if failing:
                    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                        await conn.execute("SELECT 1 / 0")
                found.append(await conn.execute(f"INSERT INTO ingest_batches (batch_id, frames, rows) VALUES"
                                                f" ('{uuid4()}', 0, 0); COMMIT" if not failing else "COMMIT"))
            return found
        finally:
            await conn.close()

    assert asyncio.run(answers()) == ["COMMIT", "ROLLBACK"]
    writing._confirmed("COMMIT")
    for answer in ("ROLLBACK", None, ""):
        with pytest.raises(ConnectionError, match="not COMMIT: it is spooled"):
            writing._confirmed(answer)
