"""Parquet export: complete days only, every table every day, exact values, atomic replacement, re-runs,
export_runs, and values the lake cannot hold refused with one line."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import duckdb
import pytest

from tests.conftest import query
from warehouse.config import WriterSettings
from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle.export import ExportError, export_all, export_day
from warehouse.lifecycle.pending import pending
from warehouse.records import OrderChange, PriceTick, RawMessage
from warehouse.store.homes import MARKER
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


def files(root: Path) -> list[str]:
    """Every file under the export directory but its own bookkeeping (.export/lock, the lake's marker)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in ("lock", MARKER))


def test_default_run_exports_every_complete_day_of_every_table_once_with_exact_values(
    storage_url: str, tmp_path: Path
) -> None:
    db_url = storage_url
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    work = pending(db_url, EXPORT_TABLES)
    # every table gets every day from the first with data, rows or not: a reader of any folder finds it
    assert set(work) == {(table, day) for table in EXPORT_TABLES for day in DAYS[:2]}
    assert export_all(db_url, root, work) == 2 * (3 + 6) + 1  # raw frames and ticks of two days, an order
    assert pending(db_url, EXPORT_TABLES) == []  # a second run has nothing to do
    assert files(root) == sorted(f"{table}/day={day.isoformat()}/part-0.parquet"
                                 for table in EXPORT_TABLES for day in DAYS[:2])

    day_dir = root / "price_ticks" / f"day={DAYS[1].isoformat()}"
    rows = duckdb.sql(f"SELECT fixture_id, received_at, price, line, max_stake, attrs "
                      f"FROM read_parquet('{day_dir / 'part-0.parquet'}')").fetchall()
    # sorted so that a selection's history is contiguous; numerics exact; jsonb as its text
    assert [(r[0], r[1].hour) for r in rows] == [("f1", 0), ("f1", 12), ("f1", 23), ("f2", 0), ("f2", 12), ("f2", 23)]
    assert rows[3][2:6] == (2.0, Decimal("-0.25"), Decimal("1500.123456"), '{"k": [1, null]}')
    assert all(r[1].tzinfo is not None for r in rows)
    assert not (root / "price_ticks" / f"day={TODAY.isoformat()}").exists(), "today is not complete"
    (payload,), = duckdb.sql(f"SELECT payload FROM read_parquet('{root}/raw_messages/*/*.parquet') LIMIT 1").fetchall()
    assert payload == '{"p": 1}'  # the frame's text, as it came
    empty = root / "quarantine" / f"day={DAYS[0].isoformat()}" / "part-0.parquet"
    assert duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{empty}')").fetchall() != []
    assert read(empty) == []

    runs = query(storage_url, "SELECT table_name, day, rows, path, sha256 FROM export_runs"
                              " WHERE table_name = 'price_ticks' ORDER BY day")
    assert [(r[1], r[2]) for r in runs] == [(DAYS[0], 6), (DAYS[1], 6)]
    for _, _, _, path, digest in runs:
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert query(db_url, "SELECT rows FROM export_runs WHERE table_name = 'quarantine'") == [(0,), (0,)]
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
    assert files(root) == [f"price_ticks/day={DAYS[0].isoformat()}/part-0.parquet"]
    assert query(db_url, "SELECT count(*) FROM export_runs WHERE day = %s", DAYS[0]) == [(2,)]


def test_a_failed_check_leaves_the_previous_export_and_no_half_partition(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    good = export_day(db_url, root, "price_ticks", DAYS[0])
    before = read(good.path / "part-0.parquet")
    monkeypatch.setattr("warehouse.lifecycle.lakefile.sha256",
                        lambda path, sync: (_ for _ in ()).throw(OSError("disk failed")))
    with pytest.raises(OSError, match="disk failed"):
        export_day(db_url, root, "price_ticks", DAYS[0])
    assert files(root) == [f"price_ticks/day={DAYS[0].isoformat()}/part-0.parquet"]
    assert read(good.path / "part-0.parquet") == before
    with pytest.raises(OSError, match="disk failed"):  # a first export that fails leaves nothing either
        export_day(db_url, root, "order_changes", DAYS[0])
    assert files(root) == [f"price_ticks/day={DAYS[0].isoformat()}/part-0.parquet"]
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
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [".export", MARKER, "order_changes"]
    result = subprocess.run([*command, "--day", DAYS[1].isoformat()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exported 11 table-days" in result.stdout
    assert (tmp_path / "x" / "price_ticks" / f"day={DAYS[1].isoformat()}" / "part-0.parquet").exists()
    assert not (tmp_path / "x" / "price_ticks" / f"day={DAYS[0].isoformat()}").exists()
    bad = subprocess.run([*command, "--table", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown table 'nope'" in bad.stderr


# A value the lake's types cannot hold exactly, inserted by hand (the adapters refuse them), per column kind.
UNFIT = [
    ("price_ticks", "line", "'NaN'", "NaN"),
    ("price_ticks", "max_stake", "1e30", "1000000000000000000000000000000"),
    ("order_changes", "stake", "0.0000000000000000001", "0.0000000000000000001"),
    ("bet_changes", "price", "'-Infinity'", "-Infinity"),
    ("price_ticks", "source_ts", "'infinity'", "infinity"),
    ("fixture_changes", "start_time", "'0001-12-31 23:00:00 BC'", "0001-12-31 23:00:00+00 BC"),
]


@pytest.mark.parametrize("table, column, literal, printed", UNFIT)
def test_a_value_the_lake_cannot_hold_fails_its_table_day_with_one_line(
    db_url: str, tmp_path: Path, table: str, column: str, literal: str, printed: str
) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    export_all(db_url, root, [(table, DAYS[0])])
    before = read(root / table / f"day={DAYS[0].isoformat()}" / "part-0.parquet")
    required = {"price_ticks": "fixture_id, market_id, outcome_id", "order_changes": "event",
                "bet_changes": "event", "fixture_changes": "fixture_id, action"}[table]
    values = ", ".join("'x'" for _ in required.split(", "))
    query(db_url, f"INSERT INTO {table} (received_at, source, {required}, {column}) VALUES (%s, 'hand', {values},"
                  f" {literal}) RETURNING 1", at(DAYS[0], 7))
    # the other table-days of the run are exported; the one with the value fails, with one line
    with pytest.raises(ExportError) as failed:
        export_all(db_url, root, [(table, DAYS[0]), ("raw_messages", DAYS[0])])
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"{table} {DAYS[0]}: {column} = {printed} cannot be exported exactly"), message
    assert "correct or remove it" in message
    assert read(root / table / f"day={DAYS[0].isoformat()}" / "part-0.parquet") == before  # untouched
    assert (root / "raw_messages" / f"day={DAYS[0].isoformat()}" / "part-0.parquet").exists()
    assert files(root) == sorted(f"{name}/day={DAYS[0].isoformat()}/part-0.parquet" for name in (table, "raw_messages"))


def test_the_export_command_names_an_unfit_value_in_one_line_and_exports_the_rest(db_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    fill(db_url, tmp_path)
    query(db_url, "INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id, line)"
                  " VALUES (%s, 'hand', 'f', 'm', 'o', 'NaN') RETURNING 1", at(DAYS[1], 7))
    result = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", db_url, "export", "--dir",
                             str(tmp_path / "x")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: price_ticks {DAYS[1]}: line = NaN cannot be exported exactly")
    assert "database URL" not in result.stderr
    exported = {(table, day) for table, day, in query(db_url, "SELECT table_name, day FROM export_runs")}
    assert len(exported) == 2 * len(EXPORT_TABLES) - 1 and ("price_ticks", DAYS[1]) not in exported
