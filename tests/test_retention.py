"""Retention: whole verified days leave PostgreSQL, nothing else does (issue 14 item 4)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from tests.conftest import query
from warehouse.config import WriterSettings
from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle.export import export_day
from warehouse.lifecycle.lock import maintenance
from warehouse.lifecycle.retention import drop
from warehouse.lifecycle.verify import verify
from warehouse.records import PriceTick, RawMessage
from warehouse.schema import FACT_TABLES
from warehouse.store.writer import Writer

CONN = UUID("0b7e7d3c-5f7c-4a8e-9d2f-333333333333")
TODAY = datetime.now(UTC).date()
OLD = [TODAY - timedelta(days=n) for n in (4, 3, 2)]  # each with its daily partitions


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def fill(url: str, tmp_path: Path, days: list[date], rows_per_day: int = 3) -> None:
    query(url, "SELECT warehouse_ensure_partitions(%s, %s)", days[0], (TODAY - days[0]).days)

    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            seq = int(datetime.now().timestamp() * 1000)
            for day in days:
                for hour in range(rows_per_day):
                    seq += 1
                    when = at(day, hour)
                    await writer.put(RawMessage(when, "op", CONN, seq, "price", b'{"p": 1}'),
                                     [PriceTick(when, "op", "b", "f", "m", "o", 2.0 + hour)])

    asyncio.run(main())


def export(url: str, root: Path, day: date) -> None:
    for table in EXPORT_TABLES:
        if query(url, f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s",
                 at(day, 0), at(day, 0) + timedelta(days=1))[0][0]:
            export_day(url, root, table, day)


def retain(url: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`warehouse retain` with the lake at `root` configured (`[export] dir`): the only lake it trusts."""
    config = root.parent / "retain.toml"
    config.write_text(f"[export]\ndir = {str(root)!r}\n")
    return subprocess.run([sys.executable, "-m", "warehouse", "retain", "--database-url", url, "--config",
                           str(config), *args], capture_output=True, text=True, timeout=120, env=os.environ)


def storage_of(url: str, day: date) -> list[str]:
    """The day's partitions (plain PostgreSQL) or chunks (TimescaleDB)."""
    if query(url, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == [("native",)]:
        return [r[0] for r in query(url, "SELECT relname FROM pg_class WHERE relname LIKE %s", f"%_p{day:%Y%m%d}")]
    return [r[0] for r in query(url, "SELECT chunk_name FROM timescaledb_information.chunks"
                                     " WHERE range_start = %s", at(day, 0))]


def test_verified_days_are_dropped_whole_and_recorded(storage_url: str, tmp_path: Path) -> None:
    db_url = storage_url
    fill(db_url, tmp_path, OLD)
    root = tmp_path / "exports"
    for day in OLD[:2]:
        export(db_url, root, day)

    dry = retain(db_url, root, "--keep-days", "3", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would drop {OLD[0]}: 6 rows" in dry.stdout and f"would drop {OLD[1]}: 6 rows" in dry.stdout
    assert "nothing" not in dry.stdout and "kept: " in dry.stdout and "3 UTC days, today included" in dry.stdout
    assert query(db_url, "SELECT count(*) FROM retention_runs") == [(0,)]

    result = retain(db_url, root, "--keep-days", "3")  # keeps today and the two days before: OLD[2] is kept anyway
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"dropped 2 days ({OLD[0]} … {OLD[1]}) from PostgreSQL: 12 rows")
    for day in OLD[:2]:
        assert storage_of(db_url, day) == []
        assert query(db_url, "SELECT count(*) FROM raw_messages WHERE received_at >= %s AND received_at < %s",
                     at(day, 0), at(day, 0) + timedelta(days=1)) == [(0,)]
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(3,)]  # OLD[2]'s rows stay
    runs = query(db_url, "SELECT table_name, day, rows, path, sha256 FROM retention_runs ORDER BY day, table_name")
    assert {(table, day) for table, day, *_ in runs} == {(t, d) for t in FACT_TABLES for d in OLD[:2]}
    exported = dict(((t, d), (r, p, s)) for t, d, r, p, s in query(
        db_url, "SELECT table_name, day, rows, path, sha256 FROM export_runs"))
    for table, day, rows, path, sha256 in runs:
        assert (rows, path, sha256) == exported.get((table, day), (0, None, None)), (table, day)

    again = retain(db_url, root, "--keep-days", "3")  # cron: nothing more to drop, nothing said
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    asked = retain(db_url, root, "--keep-days", "3", "--dry-run")  # a person asked: an answer even under a pipe
    assert asked.returncode == 0 and "nothing would be dropped" in asked.stdout and "kept: " in asked.stdout


def test_a_day_not_verified_now_is_kept_with_the_reason(storage_url: str, tmp_path: Path) -> None:
    db_url = storage_url
    fill(db_url, tmp_path, OLD)
    root = tmp_path / "exports"
    export(db_url, root, OLD[1])
    export(db_url, root, OLD[2])
    (root / "price_ticks" / f"day={OLD[1]}" / "part-0.parquet").write_bytes(b"changed by hand")

    async def late() -> None:  # a spool replayed after an outage delivers a row of an exported day
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            await writer.put(None, [PriceTick(at(OLD[2], 20), "op", "b", "f", "m", "o", 9.0)])

    asyncio.run(late())
    yesterday = TODAY - timedelta(days=1)
    empty_day_held = bool(storage_of(db_url, yesterday))  # plain PostgreSQL made its partitions ahead
    result = retain(db_url, root, "--keep-days", "1")
    assert result.returncode == 1, result.stderr  # a file failing its check is not "not exported yet"
    assert f"kept {OLD[0]}: price_ticks has 3 rows and was never exported" in result.stderr
    assert f"kept {OLD[1]}: price_ticks's export" in result.stderr and "has no Parquet footer" in result.stderr
    assert f"kept {OLD[2]}: price_ticks was exported with 3 rows but PostgreSQL has 4 now" in result.stderr
    if empty_day_held:  # nothing to lose: the empty day goes
        assert result.stdout.startswith(f"dropped 1 day ({yesterday}) from PostgreSQL: 0 rows")
        assert query(db_url, "SELECT DISTINCT day, rows FROM retention_runs") == [(yesterday, 0)]
    else:  # TimescaleDB makes no chunk for a day without rows
        assert result.stdout == "" and query(db_url, "SELECT count(*) FROM retention_runs") == [(0,)]
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(10,)]


def test_rows_in_the_default_partition_leave_with_their_day(db_url: str, tmp_path: Path) -> None:
    old = TODAY - timedelta(days=30)  # no partition was ever made for it: its rows are in the default one
    fill(db_url, tmp_path, [OLD[2]])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id, price)"
                     " VALUES (%s, 'op', 'f', 'm', 'o', 1.5)", (at(old, 1),))
    root = tmp_path / "exports"
    export(db_url, root, old)
    with maintenance(db_url, "retain") as conn:
        verdict = verify(conn, old, root)
        assert verdict.problem is None
        assert drop(conn, verdict) == 1
    assert query(db_url, "SELECT count(*) FROM price_ticks WHERE received_at < %s", at(OLD[2], 0)) == [(0,)]
    assert query(db_url, "SELECT rows FROM retention_runs WHERE table_name = 'price_ticks'") == [(1,)]
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("DELETE FROM price_ticks_default")  # the trigger was off inside the drop only


def test_dropping_is_only_through_the_function_and_only_for_its_owner(storage_url: str, tmp_path: Path) -> None:
    db_url = storage_url
    fill(db_url, tmp_path, OLD[:1])
    root = tmp_path / "exports"
    export(db_url, root, OLD[0])
    with psycopg.connect(db_url, autocommit=True) as conn,\
            pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="holding the maintenance lock"):
        conn.execute("SELECT warehouse_drop_day(%s, '{}'::jsonb)", (OLD[0],))  # even the owner holds the lock
    with maintenance(db_url, "retain") as conn:
        verdict = verify(conn, OLD[0], root)
        for role in ("warehouse_reader", "warehouse_writer"):
            conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT warehouse_drop_day(%s, '{}'::jsonb)", (OLD[0],))
            conn.execute("RESET ROLE")
        with pytest.raises(psycopg.errors.RaiseException, match=r"no verified export of .* was given"):
            conn.execute("SELECT warehouse_drop_day(%s, '{}'::jsonb)", (OLD[0],))
        wrong = '{' + ", ".join(f'"{t}": {{"rows": 99}}' for t in FACT_TABLES) + '}'
        with pytest.raises(psycopg.errors.DataException, match="but its verified export has 99"):
            conn.execute("SELECT warehouse_drop_day(%s, %s::jsonb)", (OLD[0], wrong))
        assert drop(conn, verdict) == 6
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in ("UPDATE retention_runs SET rows = 0", "DELETE FROM retention_runs",
                          "TRUNCATE retention_runs"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(statement)


def test_retain_needs_a_number_of_days(db_url: str, tmp_path: Path) -> None:
    result = retain(db_url, tmp_path / "exports")
    assert result.returncode == 2
    assert "no retention configured: give --keep-days N or set [retention] keep_days" in result.stderr
