"""Parquet export: complete days only, exact values, atomic replacement, re-runs, export_runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import duckdb
import pytest

from tests.conftest import query
from warehouse.config import WriterSettings
from warehouse.export import parquet
from warehouse.export.parquet import ExportError, export_day, pending
from warehouse.records import OrderChange, PriceTick, RawMessage
from warehouse.store.writer import Writer

CONN = UUID("0b7e7d3c-5f7c-4a8e-9d2f-222222222222")
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY]


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def fill(db_url: str, tmp_path: Path) -> None:
    # DAYS[1] gets its daily partition (as a running writer makes ahead); DAYS[0] lands in the default
    # partition: the export reads both ways.
    query(db_url, "SELECT warehouse_ensure_partitions(%s, 1)", DAYS[1])

    async def main() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            seq = 0
            for day in DAYS:
                for hour in (0, 12, 23):
                    seq += 1
                    when = at(day, hour)
                    await writer.put(RawMessage(when, "oddspapi", CONN, seq, "price", b'{"p": 1}'), [
                        PriceTick(when, "oddspapi", "pinnacle", "f2", "101", "102", 2.0 + hour / 100, player_id="0",
                                  line=Decimal("-0.25"), max_stake=Decimal("1500.123456"), attrs={"k": [1, None]}),
                        PriceTick(when, "oddspapi", "pinnacle", "f1", "101", "101", 1.5, player_id="0"),
                    ])
            await writer.put(None, [OrderChange(at(DAYS[0], 5), "mm", "INSERT", "7", price=Decimal("0.45"),
                                                stake=Decimal("100.0"), payload={"orderId": 7})])

    asyncio.run(main())


def read(path: Path) -> list[tuple]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()


def test_default_run_exports_every_complete_day_once_with_exact_values(storage_url: str, tmp_path: Path) -> None:
    fill(storage_url, tmp_path)
    root = tmp_path / "exports"
    work = pending(storage_url, parquet.EXPORT_TABLES)
    assert set(work) == {("raw_messages", DAYS[0]), ("raw_messages", DAYS[1]), ("price_ticks", DAYS[0]),
                         ("price_ticks", DAYS[1]), ("order_changes", DAYS[0]), ("order_changes", DAYS[1])}
    for table, day in work:
        export_day(storage_url, root, table, day)
    assert pending(storage_url, parquet.EXPORT_TABLES) == []  # a second run has nothing to do

    day_dir = root / "price_ticks" / f"day={DAYS[1].isoformat()}"
    assert [p.name for p in day_dir.iterdir()] == ["part-0.parquet"]
    rows = duckdb.sql(f"SELECT fixture_id, received_at, price, line, max_stake, attrs::VARCHAR "
                      f"FROM read_parquet('{day_dir / 'part-0.parquet'}')").fetchall()
    # sorted so that a selection's history is contiguous; numerics exact; jsonb as JSON
    assert [(r[0], r[1].hour) for r in rows] == [("f1", 0), ("f1", 12), ("f1", 23), ("f2", 0), ("f2", 12), ("f2", 23)]
    assert rows[3][2:5] == (2.0, Decimal("-0.25"), Decimal("1500.123456"))
    assert json.loads(rows[3][5]) == {"k": [1, None]}
    assert all(r[1].tzinfo is not None for r in rows)
    assert not (root / "price_ticks" / f"day={TODAY.isoformat()}").exists(), "today is not complete"

    runs = query(storage_url, "SELECT table_name, day, rows, path, sha256 FROM export_runs"
                              " WHERE table_name = 'price_ticks' ORDER BY day")
    assert [(r[1], r[2]) for r in runs] == [(DAYS[0], 6), (DAYS[1], 6)]
    for _, _, _, path, digest in runs:
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    (order,) = read(root / "order_changes" / f"day={DAYS[0].isoformat()}" / "part-0.parquet")
    assert Decimal("0.45") in order and Decimal("100.0") in order


def test_late_rows_for_an_exported_day_and_a_partial_today_are_exported_again(storage_url: str, tmp_path: Path) -> None:
    fill(storage_url, tmp_path)
    root = tmp_path / "exports"
    for table, day in pending(storage_url, ("price_ticks",), today_too=True):
        export_day(storage_url, root, table, day)
    assert pending(storage_url, ("price_ticks",), today_too=True) == []

    async def late() -> None:  # as a spool replayed after an outage delivers them
        async with Writer(storage_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            for day in (DAYS[1], TODAY):
                await writer.put(None, [PriceTick(at(day, 1), "oddspapi", "pinnacle", "f3", "101", "101", 3.0)])

    asyncio.run(late())
    assert pending(storage_url, ("price_ticks",)) == [("price_ticks", DAYS[1])]
    assert pending(storage_url, ("price_ticks",), today_too=True) == [("price_ticks", DAYS[1]), ("price_ticks", TODAY)]
    export_day(storage_url, root, "price_ticks", DAYS[1])
    assert len(read(root / "price_ticks" / f"day={DAYS[1].isoformat()}" / "part-0.parquet")) == 7
    assert pending(storage_url, ("price_ticks",)) == []


def test_re_exporting_a_day_replaces_it_with_identical_rows(db_url: str, tmp_path: Path) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    first = export_day(db_url, root, "price_ticks", DAYS[0])
    before = read(first.path / "part-0.parquet")
    again = export_day(db_url, root, "price_ticks", DAYS[0])
    assert read(again.path / "part-0.parquet") == before
    assert sorted(p.name for p in (root / "price_ticks").iterdir()) == [f"day={DAYS[0].isoformat()}"]
    assert query(db_url, "SELECT count(*) FROM export_runs WHERE day = %s", DAYS[0]) == [(2,)]


def test_a_failed_check_leaves_the_previous_export_and_no_half_partition(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    good = export_day(db_url, root, "price_ticks", DAYS[0])
    before = read(good.path / "part-0.parquet")
    monkeypatch.setattr(parquet, "_sha256", lambda path: (_ for _ in ()).throw(OSError("disk failed")))
    with pytest.raises(OSError, match="disk failed"):
        export_day(db_url, root, "price_ticks", DAYS[0])
    assert sorted(p.name for p in (root / "price_ticks").iterdir()) == [f"day={DAYS[0].isoformat()}"]
    assert read(good.path / "part-0.parquet") == before
    with pytest.raises(ExportError, match="not an exported table"):
        export_day(db_url, root, "../../etc", DAYS[0])


def test_export_command_runs_quietly_and_narrows_by_table_and_day(db_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    fill(db_url, tmp_path)
    command = [sys.executable, "-m", "warehouse", "--database-url", db_url, "export", "--dir", str(tmp_path / "x")]
    result = subprocess.run([*command, "--table", "order_changes"], capture_output=True, text=True, timeout=120,
                            env=os.environ)
    assert result.returncode == 0, result.stderr
    assert "exported 2 table-days" in result.stdout
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["order_changes"]
    result = subprocess.run([*command, "--day", DAYS[1].isoformat()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x" / "price_ticks" / f"day={DAYS[1].isoformat()}" / "part-0.parquet").exists()
    assert not (tmp_path / "x" / "price_ticks" / f"day={DAYS[0].isoformat()}").exists()
    bad = subprocess.run([*command, "--table", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown table 'nope'" in bad.stderr
