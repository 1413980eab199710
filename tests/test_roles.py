"""Least privilege in practice: the collector as warehouse_writer, the export as warehouse_maintainer."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests import test_oddspapi
from tests.collecting import collect_live
from tests.conftest import query
from warehouse import schema as tables
from warehouse.simulate.oddspapi import OddsPapiSimulator


def login(db_url: str, name: str, role: str) -> str:
    """A login in `role` (as the README shows), and the URL to connect as it."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"DO $$ BEGIN CREATE ROLE {name} LOGIN IN ROLE {role};"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    return db_url.replace("postgres@", f"{name}@")


CHANGES = [
    "UPDATE price_ticks SET price = 1", "DELETE FROM raw_messages", "TRUNCATE collector_events",
    "UPDATE export_runs SET rows = 0", "DELETE FROM ingest_batches WHERE false OR true",
    "DROP TABLE quarantine", "CREATE TABLE sneaky (x int)", "ALTER TABLE price_ticks DISABLE TRIGGER ALL",
]


def storage_changes(url: str) -> list[str]:
    """Statements aimed at where price_ticks' rows are stored: their partitions, or TimescaleDB's chunks
    (TimescaleDB truncates a chunk without firing a trigger: only privileges stop it)."""
    if query(url, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == [("timescaledb",)]:
        parts = [r[0] for r in query(url, "SELECT show_chunks('price_ticks')::text")]
        extra = ["SELECT drop_chunks('price_ticks', older_than => now() + INTERVAL '1 day')"]
    else:
        parts = [r[0] for r in query(url, "SELECT DISTINCT tableoid::regclass::text FROM price_ticks")]
        extra = [f"ALTER TABLE price_ticks DETACH PARTITION {parts[0]}"]
    assert parts, "price_ticks must hold rows"
    return [*extra, *(change for part in parts for change in (
        f"TRUNCATE {part}", f"DELETE FROM {part}", f"UPDATE {part} SET price = 1", f"DROP TABLE {part}"))]


def refused(url: str, statement: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error:
            return True
    return False


def test_the_collector_runs_as_warehouse_writer_and_cannot_change_history(storage_url: str, tmp_path: Path) -> None:
    collector = login(storage_url, "owh_collector", "warehouse_writer")
    simulator = OddsPapiSimulator(test_oddspapi.KEY, script=test_oddspapi.SEED, generate=False)
    collect_live(simulator, collector, tmp_path, test_oddspapi.toml, {"OP_KEY": test_oddspapi.KEY},
                 lambda: query(storage_url, "SELECT count(*) FROM raw_messages")[0][0] == len(test_oddspapi.SEED))
    assert query(storage_url, "SELECT count(*) FROM price_ticks")[0][0] == 3
    for statement in [*CHANGES, *storage_changes(storage_url)]:
        if statement.startswith("DELETE FROM ingest_batches"):
            continue  # the writer prunes its own bookkeeping (ingest_batches is not history)
        assert refused(collector, statement), statement
    assert query(storage_url, "SELECT count(*) FROM price_ticks")[0][0] == 3


def test_the_reader_cannot_write_and_the_export_runs_as_the_maintainer(storage_url: str, tmp_path: Path) -> None:
    reader = login(storage_url, "owh_analyst", "warehouse_reader")
    maintainer = login(storage_url, "owh_maintainer", "warehouse_maintainer")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    at = datetime(yesterday.year, yesterday.month, yesterday.day, 12, tzinfo=UTC)
    query(storage_url, "INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id, price)"
                       " VALUES (%s, 'oddspapi', 'f', 'm', 'o', 2.0) RETURNING 1", at)
    insert = ("INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id)"
              " VALUES (now(), 's', 'f', 'm', 'o')")
    for url in (reader, maintainer):
        for statement in [*CHANGES, *storage_changes(storage_url), insert]:
            assert refused(url, statement), statement
    command = [sys.executable, "-m", "warehouse", "export", "--dir", str(tmp_path / "x")]
    analyst = subprocess.run(command, capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, WAREHOUSE_DATABASE_URL=reader))
    assert analyst.returncode == 2
    assert analyst.stderr == ("error: role owh_analyst may not record exports: run `warehouse export` as a login in"
                              " warehouse_maintainer (README: Roles)\n")
    assert query(storage_url, "SELECT count(*) FROM export_runs") == [(0,)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, WAREHOUSE_DATABASE_URL=maintainer))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x" / "price_ticks" / f"day={yesterday}" / "part-0.parquet").exists()
    assert query(storage_url, "SELECT table_name, rows FROM export_runs WHERE rows > 0") == [("price_ticks", 1)]
    assert query(storage_url, "SELECT count(*) FROM export_runs") == [(len(tables.FACT_TABLES),)]  # every table
    assert query(storage_url, "SELECT count(*) FROM price_ticks") == [(1,)]


@pytest.mark.parametrize("table, day", [("../../etc", "2026-11-20"), ("price_ticks", "2026-11-20/../../x"),
                                        ("price_ticks/../raw_messages", "2026-11-20")])
def test_export_names_cannot_escape_the_export_directory(db_url: str, tmp_path: Path, table: str, day: str) -> None:
    result = subprocess.run([sys.executable, "-m", "warehouse", "--database-url", db_url, "export",
                             "--dir", str(tmp_path / "x"), "--table", table, "--day", day],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*"))
    assert not (tmp_path / "etc").exists()


def test_partitions_are_made_by_the_writer_for_the_coming_days_only(storage_url: str, storage: str) -> None:
    """warehouse_ensure_partitions runs with its owner's rights: PUBLIC may not call it, and the writer
    gets the days around today it writes, not January's (which would move where the export starts)."""
    nobody = login(storage_url, "owh_nobody", "pg_monitor")  # a login with no warehouse role
    for outsider in (login(storage_url, "owh_analyst", "warehouse_reader"), nobody):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="warehouse_ensure_partitions"):
            query(outsider, "SELECT warehouse_ensure_partitions(current_date, 1)")
    collector = login(storage_url, "owh_collector", "warehouse_writer")
    today = datetime.now(UTC).date()
    january = today.replace(month=1, day=1) - timedelta(days=366)

    def partitions() -> set[str]:
        return {r[0] for r in query(storage_url, "SELECT relname FROM pg_class WHERE relkind = 'r'"
                                                 " AND relname LIKE 'price_ticks_p%'")}

    before = partitions()
    assert query(collector, "SELECT warehouse_ensure_partitions(%s, 31)", january) == [(0,)]
    assert query(collector, "SELECT warehouse_ensure_partitions(%s, 5)", today + timedelta(days=60)) == [(0,)]
    made = query(collector, "SELECT warehouse_ensure_partitions(%s, 5)", today + timedelta(days=29))[0][0]
    if storage == "timescaledb":
        assert made == 0 and partitions() == before == set()  # chunks come with rows
        return
    ahead = {f"price_ticks_p{today + timedelta(days=n):%Y%m%d}" for n in (29, 30, 31)}
    assert made == 3 * len(tables.FACT_TABLES) and partitions() == before | ahead
    # the owner still makes any day's (replay --into, maintenance)
    assert query(storage_url, "SELECT warehouse_ensure_partitions(%s, 1)", january)[0][0] == len(tables.FACT_TABLES)
