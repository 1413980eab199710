"""The on-disk spool: FIFO order across segments, torn tails, safe unpickling, one owner."""

from __future__ import annotations

import pickle
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import orjson
import pytest

from warehouse.records import CollectorEvent, RawMessage
from warehouse.store import spool as spool_module
from warehouse.store.spool import HEADER, MAGIC, Spool, SpoolError, read_backlog

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


def test_an_entry_naming_any_other_class_is_refused(tmp_path: Path) -> None:
    payload = pickle.dumps((uuid4(), [(Path("/etc/passwd"), [])]))
    (tmp_path / "0000000001.spool").write_bytes(struct.pack("<4sII", MAGIC, len(payload), zlib.crc32(payload))
                                                + payload)
    assert HEADER.size == 12
    spool = Spool(tmp_path)
    assert spool.pending_batches == 0  # refused, cut off, and logged rather than loaded
    spool.close()


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
