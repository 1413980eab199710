"""The on-disk spool: FIFO order across segments, torn tails, a format later versions read,
the previous format still read, entries this version cannot read kept for a human, one owner."""

from __future__ import annotations

import asyncio
import logging
import pickle
import shutil
import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from tests.conftest import query
from tests.exact import identical
from tests.fixtures.make_spool_fixtures import ENTRIES
from warehouse.config import WriterSettings
from warehouse.records import TABLE_OF, CollectorEvent, PriceTick, Quarantine, RawMessage
from warehouse.store import spool as spool_module
from warehouse.store import spoolcodec
from warehouse.store.spool import HEADER, Spool, SpoolError, read_backlog
from warehouse.store.writer import Writer

FIXTURES = Path(__file__).parent / "fixtures" / "spool"

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def units(source: str, n: int) -> list:
    return [(RawMessage(NOW, source, uuid4(), i, "k", b"{}"), [CollectorEvent(NOW, source, None, "x")])
            for i in range(n)]


def drain(spool: Spool) -> list:
    out = []
    while (entry := spool.peek()) is not None:
        out.append(entry)
        spool.commit_head()
    return out


def test_entries_come_back_in_order_across_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 2000)  # force several segment files
    spool = Spool(tmp_path, fsync=False)
    written = [(uuid4(), units("a", 3)) for _ in range(20)]
    for batch_id, batch in written[:10]:
        spool.append(batch_id, batch)
    assert len(list(tmp_path.glob("*.spool"))) > 1
    first = drain(spool)
    for batch_id, batch in written[10:]:
        spool.append(batch_id, batch)
    assert first + drain(spool) == written
    assert spool.pending_batches == 0 and not list(tmp_path.glob("*.spool"))
    spool.close()


def test_a_reopened_spool_still_holds_what_was_not_committed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entries = [(uuid4(), units("a", 2)), (uuid4(), units("b", 1))]
    for entry in entries:
        spool.append(*entry)
    spool.peek()
    spool.commit_head()
    spool.close()
    reopened = Spool(tmp_path)
    # commit progress is not persisted: replay relies on batch ids to skip what was committed
    assert reopened.pending_batches == 2
    assert drain(reopened) == entries
    reopened.close()


def test_a_torn_last_entry_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good = (uuid4(), units("a", 2))
    spool.append(*good)
    spool.append(uuid4(), units("a", 2))
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    segment.write_bytes(segment.read_bytes()[:-7])  # the process died mid-write
    reopened = Spool(tmp_path)
    assert reopened.pending_batches == 1
    assert drain(reopened) == [good]
    reopened.close()


def framed(magic: bytes, payload: bytes) -> bytes:
    return struct.pack("<4sII", magic, len(payload), zlib.crc32(payload)) + payload


def test_a_format_1_entry_naming_any_other_class_is_refused_and_kept(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    payload = pickle.dumps((uuid4(), [(Path("/etc/passwd"), [])]))
    segment = tmp_path / "0000000001.spool"
    segment.write_bytes(framed(spoolcodec.MAGIC_PICKLE, payload))
    assert HEADER.size == 12
    with caplog.at_level(logging.ERROR):
        spool = Spool(tmp_path)
    assert spool.pending_batches == 0  # refused and logged rather than loaded
    assert "pathlib" in caplog.text and "which is not a record type" in caplog.text
    spool.close()
    (kept,) = (tmp_path / "refused").glob("0000000001-*.spool")
    assert kept.read_bytes() == framed(spoolcodec.MAGIC_PICKLE, payload) and not segment.exists()


def test_one_owner_per_spool_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use by another writer"):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()


def test_backlog_file_counts_pending_frames_per_source(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "collector")
    spool.append(uuid4(), units("saba", 3))
    spool.append(uuid4(), units("mm", 2))
    assert orjson.loads((tmp_path / "collector" / "backlog.json").read_bytes()) == {
        "batches": 2, "frames": {"saba": 3, "mm": 2}}
    assert read_backlog(tmp_path) == {"saba": 3, "mm": 2}
    spool.peek()
    spool.commit_head()
    assert read_backlog(tmp_path) == {"mm": 2}
    spool.close()


def test_a_driver_uuid_subclass_is_spooled_as_a_plain_uuid(tmp_path: Path) -> None:
    """asyncpg hands out its own UUID subclass; a record carrying one must still replay (found by the soak)."""
    import asyncpg.pgproto.pgproto as pgproto

    driver_uuid = pgproto.UUID("0b7e7d3c-5f7c-4a8e-9d2f-222222222222")
    spool = Spool(tmp_path, fsync=False)
    spool.append(uuid4(), [(None, [CollectorEvent(datetime.now(UTC), "s", driver_uuid, "disconnect")])])
    spool.close()
    reopened = Spool(tmp_path, fsync=False)
    (_, [(_, [event])]) = reopened.peek()
    assert type(event.connection_id) is UUID and event.connection_id == UUID(str(driver_uuid))


# -- the format ----------------------------------------------------------------------------------


def round_trip(units: list) -> tuple[bytes, list]:
    batch_id = uuid4()
    payload = spoolcodec.encode(batch_id, units)
    back_id, back = spoolcodec.decode(spoolcodec.MAGIC, payload)
    assert back_id == batch_id
    return payload[:1], back


def test_every_record_type_round_trips_exactly() -> None:
    dialects = []
    for batch_id, units in ENTRIES:
        dialect, back = round_trip(units)
        identical(back, units, str(batch_id))
        dialects.append(dialect)
    assert dialects == [b"J", b"P"]  # the second holds an infinite price
    assert {type(r) for _, units in ENTRIES for _, rows in units for r in rows} == set(TABLE_OF)


EDGE = datetime(2026, 11, 21, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))


@pytest.mark.parametrize(("name", "value", "dialect"), [
    ("plain", {"a": [1, 2.5, None, True, "x"], "b": {}}, b"J"),
    ("64-bit ints", {"max": 2**63 - 1, "min": -(2**63)}, b"J"),
    ("an int beyond 64 bits", {"big": 2**70, "neg": [-(2**80)]}, b"X"),
    ("a number no double is", {"stake": Decimal("1234567890.123456789012345678"), "tiny": [Decimal("1E-400")]},
     b"X"),
    ("both", {"big": 2**70, "d": Decimal("1.5E-400"), "plain": 2.5}, b"X"),
    ("a lone surrogate", {"s": "\ud800"}, b"P"),
    ("unicode and control characters", {"名": "下半场 \"q\"\n\t\x00\x1f"}, b"J"),
    ("text that looks like a date", "2026-11-21T10:30:00+00:00", b"J"),
    ("a float's shortest repr", [0.1, 1e-320, 1.7976931348623157e308, -0.0], b"J"),
])
def test_jsonb_values_round_trip_exactly(name: str, value: Any, dialect: bytes) -> None:
    tick = PriceTick(EDGE, "s", None, "f", "m", "o", 1.5, attrs=value)
    written, back = round_trip([(None, [tick])])
    assert written == dialect, name
    identical(back, [(None, [tick])], name)


@pytest.mark.parametrize("price", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_price_takes_the_exact_dialect(price: float) -> None:
    tick = PriceTick(EDGE, "s", None, "f", "m", "o", price)
    written, back = round_trip([(None, [tick])])
    assert written == b"P"  # orjson would have written null
    identical(back, [(None, [tick])])


def test_frames_that_are_not_utf8_and_driver_uuids_round_trip() -> None:
    import asyncpg.pgproto.pgproto as pgproto

    driver_uuid = pgproto.UUID("0b7e7d3c-5f7c-4a8e-9d2f-222222222222")
    raw = RawMessage(EDGE, "s", driver_uuid, 2**62, "quarantined", b"\xff\xfe{", "id\x01")
    _, [(back, [event])] = round_trip([(raw, [CollectorEvent(EDGE, "s", driver_uuid, "disconnect")])])
    assert back.payload == b"\xff\xfe{" and back.seq == 2**62
    assert type(back.connection_id) is UUID and back.connection_id == UUID(str(driver_uuid))
    assert type(event.connection_id) is UUID


def test_an_empty_batch_round_trips() -> None:
    assert round_trip([]) == (b"J", [])


# -- files written by earlier versions -----------------------------------------------------------


def drained_copy(fixture: str, tmp_path: Path) -> list:
    directory = tmp_path / "spool"
    shutil.copytree(FIXTURES / fixture, directory)
    spool = Spool(directory, fsync=False)
    assert spool.pending_batches == len(ENTRIES)
    assert spool.pending_frames == {"oddspapi": 2, "saba": 1, "ckex": 1}
    entries = drain(spool)
    spool.close()
    assert not list(directory.glob("*.spool")) and not (directory / "refused").exists()
    return entries


@pytest.mark.parametrize("fixture", ["ows2", "ows1"])
def test_a_spool_file_written_by_an_earlier_version_reads_back_exactly(fixture: str, tmp_path: Path) -> None:
    """ows2: what version 0.1.0 writes; ows1: the pickles of the version before (still replayed after
    an upgrade). Both files are committed as written; tests/fixtures/make_spool_fixtures.py made them."""
    entries = drained_copy(fixture, tmp_path)
    identical(entries, ENTRIES)


def test_a_torn_format_1_tail_is_cut_off_too(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "ows1", tmp_path / "spool")
    segment = tmp_path / "spool" / "0000000001.spool"
    segment.write_bytes(segment.read_bytes()[:-7])
    spool = Spool(tmp_path / "spool", fsync=False)
    identical(drain(spool), ENTRIES[:1])
    spool.close()


def test_the_committed_format_2_file_uses_both_dialects() -> None:
    data = (FIXTURES / "ows2" / "0000000001.spool").read_bytes()
    magic, length, _ = HEADER.unpack_from(data)
    second = HEADER.size + length
    assert (magic, data[HEADER.size:HEADER.size + 1]) == (b"OWS2", b"J")
    assert (data[second:second + 4], data[second + HEADER.size:second + HEADER.size + 1]) == (b"OWS2", b"P")


@pytest.mark.parametrize("fixture", ["ows2", "ows1"])
def test_a_spool_left_by_an_earlier_version_replays_into_the_database(fixture: str, db_url: str,
                                                                      tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    shutil.copytree(FIXTURES / fixture, spool_dir)

    async def main() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=spool_dir)) as writer:
            assert await writer.wait_replayed(30)

    asyncio.run(asyncio.wait_for(main(), 60))
    assert {r[0] for r in query(db_url, "SELECT batch_id FROM ingest_batches")} == {b for b, _ in ENTRIES}
    assert query(db_url, "SELECT seq, source, kind, payload, event_id FROM raw_messages ORDER BY seq") == [
        (raw.seq, raw.source, raw.kind, None if raw.payload is None else orjson.loads(raw.payload), raw.event_id)
        for _, units in ENTRIES for raw, _ in units if raw is not None]
    ticks = query(db_url, "SELECT r.seq, p.outcome_id, p.price, p.line, p.max_stake, p.source_ts, p.attrs"
                          " FROM price_ticks p JOIN raw_messages r ON r.id = p.raw_id ORDER BY r.seq, p.outcome_id")
    assert ticks == sorted((raw.seq, t.outcome_id, t.price, t.line, t.max_stake, t.source_ts, t.attrs)
                           for _, units in ENTRIES for raw, rows in units for t in rows if isinstance(t, PriceTick))
    for cls, table in TABLE_OF.items():
        expected = sum(isinstance(r, cls) for _, units in ENTRIES for _, rows in units for r in rows)
        assert query(db_url, f"SELECT count(*) FROM {table}") == [(expected,)], table
    assert query(db_url, "SELECT count(*) FROM quarantine WHERE reason LIKE '%refused%'") == [(0,)]


# -- what this version cannot read is kept, never dropped ----------------------------------------


def written_by_a_later_version(table: dict[str, Any], units: list) -> bytes:
    """An OWS2 entry as some later version might write it: one table described by hand."""
    document = {"batch": str(uuid4()), "tables": [table], "units": units}
    return framed(spoolcodec.MAGIC, b"J" + orjson.dumps(document))


def spool_with(tmp_path: Path, middle: bytes) -> tuple[Path, list, bytes]:
    """A segment of a readable entry, `middle`, and another readable entry."""
    good = [(uuid4(), units("a", 1)), (uuid4(), units("b", 2))]
    segment = tmp_path / "0000000001.spool"
    segment.write_bytes(framed(spoolcodec.MAGIC, spoolcodec.encode(*good[0])) + middle
                        + framed(spoolcodec.MAGIC, spoolcodec.encode(*good[1])))
    return segment, good, segment.read_bytes()


QUARANTINE_COLUMNS = list(Quarantine._fields)
QUARANTINE_ROW = ["2026-11-21T00:00:00+00:00", "s", None, "why", None]


@pytest.mark.parametrize(("table", "message"), [
    ({"table": "odds_ladders", "columns": QUARANTINE_COLUMNS, "codecs": ["time"] + ["json"] * 4,
      "values": [[v] for v in QUARANTINE_ROW]}, "table 'odds_ladders' is unknown to this version"),
    ({"table": "quarantine", "columns": [*QUARANTINE_COLUMNS, "severity"], "codecs": ["time"] + ["json"] * 5,
      "values": [[v] for v in [*QUARANTINE_ROW, 3]]}, "column 'severity' of quarantine is not in this version's"),
    ({"table": "quarantine", "columns": QUARANTINE_COLUMNS, "codecs": ["time", "json", "uuid7", "json", "json"],
      "values": [[v] for v in QUARANTINE_ROW]}, "codec 'uuid7' of quarantine is unknown to this version"),
    ({"table": "quarantine", "columns": QUARANTINE_COLUMNS[1:], "codecs": ["json"] * 4,
      "values": [[v] for v in QUARANTINE_ROW[1:]]}, "lack column 'received_at'"),
])
def test_an_entry_this_version_cannot_read_is_skipped_logged_and_its_file_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, table: dict[str, Any], message: str) -> None:
    segment, good, before = spool_with(tmp_path, written_by_a_later_version(table, [[-1, 0]]))
    with caplog.at_level(logging.ERROR, logger="warehouse.spool"):
        spool = Spool(tmp_path, fsync=False)
        assert spool.pending_batches == 2
        assert drain(spool) == good  # the rest replays, in order
    spool.close()
    assert message in caplog.text and "the entry at byte" in caplog.text and "kept in" in caplog.text
    (kept,) = (tmp_path / "refused").glob("0000000001-*.spool")
    assert kept.read_bytes() == before, "the file is kept whole, as it was"
    assert not segment.exists()
    again = Spool(tmp_path)
    assert again.pending_batches == 0  # and it is not replayed again
    again.close()


def test_an_entry_of_a_newer_format_is_kept_not_cut_off_as_torn(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    segment, good, before = spool_with(tmp_path, framed(b"OWS9", b"\x00whatever comes next"))
    with caplog.at_level(logging.ERROR, logger="warehouse.spool"):
        spool = Spool(tmp_path, fsync=False)
    assert segment.read_bytes() == before and "b'OWS9' is newer than this version reads" in caplog.text
    assert drain(spool) == good
    spool.close()
    assert [p.read_bytes() for p in (tmp_path / "refused").iterdir()] == [before]


def test_a_spool_holding_only_unreadable_entries_is_moved_aside_at_start(tmp_path: Path) -> None:
    segment = tmp_path / "0000000001.spool"
    segment.write_bytes(framed(b"OWS9", b"later"))
    spool = Spool(tmp_path, fsync=False)
    assert spool.pending_batches == 0 and spool.peek() is None and not segment.exists()
    entry = (uuid4(), units("a", 1))
    spool.append(*entry)
    assert drain(spool) == [entry]
    spool.close()
    assert len(list((tmp_path / "refused").iterdir())) == 1


def test_columns_are_read_by_name_in_any_order_and_added_fields_take_their_default(tmp_path: Path) -> None:
    """What a later version's reader does with this version's entries, seen from the other side: an
    entry whose raw_messages lack event_id (a field added later, with a default) and whose columns
    come in another order still reads."""
    columns = ["source", "received_at", "seq", "connection_id", "kind", "payload"]
    table = {"table": "raw_messages", "columns": columns, "codecs": ["json", "time", "json", "uuid", "json", "bytes"],
             "values": [["s"], ["2026-11-21T00:00:00.000001+00:00"], [7], [str(CONN)], ["k"], ["{}"]]}
    tick = {"table": "price_ticks", "columns": ["received_at", "source", "bookmaker", "fixture_id", "market_id",
                                                "outcome_id", "price", "line"],
            "codecs": ["time", "json", "json", "json", "json", "json", "json", "decimal"],
            "values": [["2026-11-21T00:00:00+01:00"], ["s"], [None], ["f"], ["m"], ["o"], [1.5], ["2.50"]]}
    document = {"batch": str(uuid4()), "tables": [table, tick], "units": [[0, 1]]}
    (tmp_path / "0000000001.spool").write_bytes(framed(spoolcodec.MAGIC, b"J" + orjson.dumps(document)))
    spool = Spool(tmp_path, fsync=False)
    (_, [(raw, [price])]) = spool.peek()
    spool.close()
    identical(raw, RawMessage(datetime(2026, 11, 21, 0, 0, 0, 1, tzinfo=UTC), "s", CONN, 7, "k", b"{}", None))
    identical(price, PriceTick(datetime(2026, 11, 21, tzinfo=timezone(timedelta(hours=1))), "s", None, "f", "m",
                               "o", 1.5, line=Decimal("2.50")))


CONN = UUID("0b7e7d3c-5f7c-4a8e-9d2f-111111111111")


def test_a_decimal_inside_a_jsonb_value_is_told_from_one_in_a_decimal_column() -> None:
    """A decimal column's Decimal is text in the spool (its exponent kept); one inside a jsonb value is
    a number, as the writer stores it: only the second needs the exact dialect."""
    column = PriceTick(EDGE, "s", None, "f", "m", "o", 1.5, max_stake=Decimal("250.50"), attrs={"limit": 250.5})
    both = column._replace(line=Decimal("-0.25"), attrs={"limit": Decimal("250.500000000000000000001")})
    for units, dialect in [([(None, [column])], b"J"), ([(None, [column, both])], b"X")]:
        written, back = round_trip(units)
        assert written == dialect
        identical(back, units)
