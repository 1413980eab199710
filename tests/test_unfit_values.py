"""Times and values the lake cannot hold (issue 21 item 7): refused by the database, left out of the export
and retention with a warning when an older warehouse holds some, and an error on the query surface
instead of a NULL or a naive 9999-12-31T23:59:59.999999."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import query
from tests.test_lake_trust import configured
from warehouse import schema
from warehouse.store import migrate

INSERT = ("INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id, source_ts, max_stake)"
          " VALUES (%s, 's', 'f', 'm', 'o', %s, %s)")


def warehouse(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", "--database-url", url, *args],
                          capture_output=True, text=True, timeout=180, env=os.environ)


def older_warehouse_with(url: str, *received_at: str) -> None:
    """A warehouse from before the window was enforced (revision 0008) that took rows at these times,
    then upgraded."""
    migrate.downgrade(url, "0008")
    for at in received_at:
        query(url, INSERT + " RETURNING 1", at, None, None)
    migrate.upgrade(url)


@pytest.mark.parametrize("table", schema.FACT_TABLES)
def test_every_fact_table_refuses_a_received_at_outside_the_window(storage_url: str, storage: str,
                                                                   table: str) -> None:
    required = {c.name: "x" for c in schema.metadata.tables[table].columns
                if not c.nullable and c.server_default is None and c.name != "received_at"}
    required.update({k: "00000000-0000-0000-0000-000000000000" for k in required if k == "connection_id"})
    required.update({k: "1" for k in required if k == "seq"})
    names = ", ".join(["received_at", *required])
    marks = ", ".join(["%s"] * (len(required) + 1))
    with psycopg.connect(storage_url, autocommit=True) as conn:
        for outside in ("infinity", "-infinity", "0001-01-01 00:00:00+00", "1970-01-01 00:00:00+00",
                        "1999-12-31 23:59:59.999999+00", "2100-01-01 00:00:00+00"):
            # (TimescaleDB refuses -infinity itself: no chunk can hold it)
            with pytest.raises((psycopg.errors.CheckViolation, psycopg.errors.DatetimeFieldOverflow)) as refused:
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", (outside, *required.values()))
            assert (f"{table}_received_at_window" in str(refused.value)
                    or (storage == "timescaledb" and outside == "-infinity")), refused.value
        for inside in ("2000-01-01 00:00:00+00", "2099-12-31 23:59:59.999999+00"):
            conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", (inside, *required.values()))


def test_the_window_is_added_to_a_timescaledb_warehouse_with_compressed_chunks(timescale_url: str) -> None:
    """TimescaleDB takes the constraint on a hypertable with compressed chunks; the rows already outside
    the window stay, and new ones are refused."""
    day = datetime.now(UTC) - timedelta(days=10)
    migrate.downgrade(timescale_url, "0008")
    for n in range(3):
        query(timescale_url, INSERT + " RETURNING 1", day + timedelta(minutes=n), None, None)
    query(timescale_url, INSERT + " RETURNING 1", "infinity", None, None)
    query(timescale_url, "SELECT compress_chunk(c) FROM show_chunks('price_ticks') AS c")
    assert query(timescale_url, "SELECT count(*) FROM timescaledb_information.chunks"
                                " WHERE hypertable_name = 'price_ticks' AND NOT is_compressed") == [(0,)]
    migrate.upgrade(timescale_url)
    with pytest.raises(psycopg.errors.CheckViolation):
        query(timescale_url, INSERT, "infinity", None, None)
    with pytest.raises(psycopg.errors.CheckViolation):  # into a compressed chunk's range: checked too
        query(timescale_url, INSERT, "1999-01-01 00:00:00+00", None, None)
    assert query(timescale_url, "SELECT count(*) FROM price_ticks") == [(4,)]


def test_rows_from_before_the_window_neither_stop_nor_stretch_the_export_and_retention(
        storage_url: str, tmp_path: Path) -> None:
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime(yesterday.year, yesterday.month, yesterday.day, 12, tzinfo=UTC)
    query(storage_url, "SELECT warehouse_ensure_partitions(%s, 1)", yesterday)
    older_warehouse_with(storage_url, "infinity", "0001-01-01 00:00:00+00", noon.isoformat())

    config = configured(tmp_path, tmp_path / "lake")  # the lake export writes and retention trusts
    exported = warehouse(storage_url, "--config", str(config), "export")
    assert exported.returncode == 0, exported.stderr
    warned = "price_ticks holds 2 rows with received_at before 2000-01-01 or from 2100-01-01 on"
    assert warned in exported.stderr
    # every table of the days PostgreSQL holds in the window (from yesterday), not of 0001-01-01 on
    days = query(storage_url, "SELECT min(day), count(DISTINCT day) FROM export_runs")[0]
    assert days[0] >= yesterday - timedelta(days=1) and days[1] <= 3, days
    assert query(storage_url, "SELECT rows FROM export_runs WHERE table_name = 'price_ticks' AND day = %s",
                 yesterday) == [(1,)]
    retained = warehouse(storage_url, "--config", str(config), "retain", "--keep-days", "1")
    assert retained.returncode == 0, retained.stderr
    assert warned in retained.stderr
    assert query(storage_url, "SELECT count(*) FROM price_ticks") == [(2,)]  # yesterday's row left PostgreSQL


def test_the_query_surface_refuses_times_and_decimals_the_lake_cannot_hold(db_url: str) -> None:
    now = datetime.now(UTC)
    query(db_url, INSERT + " RETURNING 1", now, "infinity", None)
    query(db_url, INSERT + " RETURNING 1", now, None, "1e30")
    counted = warehouse(db_url, "query", "SELECT count(*) AS n, count(fixture_id) AS f FROM price_ticks",
                        "--format", "csv")
    assert counted.returncode == 0 and counted.stdout.splitlines() == ["n,f", "2,2"], counted.stderr
    for column, value in (("source_ts", "infinity"), ("max_stake", "1000000000000000000000000000000")):
        read = warehouse(db_url, "query", f"SELECT {column} FROM price_ticks", "--format", "csv")
        assert read.returncode == 2 and read.stderr.count("\n") == 1, read.stderr
        assert f"price_ticks.{column} = {value} cannot be read as the lake holds it" in read.stderr


def test_a_received_at_from_before_the_window_is_an_error_on_the_surface_not_a_naive_time(db_url: str) -> None:
    older_warehouse_with(db_url, "infinity")
    read = warehouse(db_url, "query", "SELECT received_at FROM price_ticks", "--format", "json")
    assert read.returncode == 2 and read.stderr.count("\n") == 1, read.stdout + read.stderr
    assert "received_at = infinity is not a time the lake holds" in read.stderr
    assert "9999" not in read.stdout
