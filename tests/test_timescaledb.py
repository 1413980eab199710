"""What only TimescaleDB has: compressed chunks, its compression settings, its jobs.

A compressed day must read back exactly as it was written — through the tables, the export and the
analysis relations — and stay append-only; the jobs the migrations schedule must do what the
README says when they run (the test server runs no scheduler: each test runs a job by hand).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import duckdb
import psycopg
import pytest

from tests import test_analysis, test_roles
from tests.conftest import query
from tests.test_writer import raw, sample_records
from warehouse import analysis, schema
from warehouse.config import WriterSettings
from warehouse.lifecycle.export import export_day
from warehouse.records import TABLE_OF, PriceTick, RawMessage
from warehouse.store import migrate
from warehouse.store.writer import Writer

DAY = test_analysis.DAY  # yesterday: a complete day, and the scripted market's
AT = datetime(DAY.year, DAY.month, DAY.day, 9, 30, 0, 123456, tzinfo=UTC)


def write(url: str, spool: Path, units: list[tuple[RawMessage | None, list[Any]]]) -> None:
    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=spool)) as writer:
            for unit in units:
                await writer.put(*unit)

    asyncio.run(asyncio.wait_for(main(), 60))


def market_units() -> list[tuple[RawMessage | None, list[Any]]]:
    return [(RawMessage(when, "oddspapi", test_analysis.CONN, seq, "odds", b"{}"), records)
            for seq, (when, records) in enumerate(test_analysis.FRAMES, 1)]


def chunks(url: str, day: date) -> dict[str, tuple[str, bool]]:
    """Per fact table, its chunk holding `day` and whether that chunk is compressed."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {table: (chunk, compressed) for table, chunk, compressed in query(
        url, "SELECT hypertable_name, format('%%I.%%I', chunk_schema, chunk_name), is_compressed"
             " FROM timescaledb_information.chunks WHERE hypertable_schema = 'public' AND range_start = %s", start)}


def table_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table in a total order (every column, left to right)."""
    width = len(schema.metadata.tables[table].columns)
    # json has no ordering: its text is what it holds (the frame as received)
    names = ", ".join(f"{column.name}::text AS {column.name}" if column.name == "payload" and table == "raw_messages"
                      else column.name for column in schema.metadata.tables[table].columns)
    return query(url, f"SELECT {names} FROM {table} ORDER BY {', '.join(map(str, range(1, width + 1)))}")


def canonical(row: tuple[Any, ...]) -> tuple[str, ...]:
    """A row as text both sides agree on: UTC times, decimals by value, JSON by value, UUIDs as text."""
    def value(v: Any) -> str:
        if isinstance(v, datetime):
            return v.astimezone(UTC).isoformat()
        if isinstance(v, Decimal):
            return str(v.normalize()) if v else "0"
        if isinstance(v, str) and v[:1] in "{[":  # DuckDB hands JSON columns over as text
            try:
                return json.dumps(json.loads(v), sort_keys=True)
            except ValueError:
                return repr(v)
        if isinstance(v, dict | list):
            return json.dumps(v, sort_keys=True)
        if isinstance(v, UUID):  # the lake holds UUIDs as their canonical text
            return repr(str(v))
        return repr(v)
    return tuple(value(v) for v in row)


def parquet_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    names = ", ".join(column.name for column in schema.metadata.tables[table].columns)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT {names} FROM read_parquet('{path}')").fetchall()


def assert_export_equals_postgresql(url: str, root: Path, table: str, day: date) -> int:
    exported = export_day(url, root, table, day)
    in_postgres = sorted(canonical(row) for row in table_rows(url, table)
                         if row[0].astimezone(UTC).date() == day)
    in_parquet = sorted(canonical(row) for row in parquet_rows(exported.path / "part-0.parquet", table))
    assert in_parquet == in_postgres, table
    assert exported.rows == len(in_postgres)
    return exported.rows


def test_compression_settings_are_the_schemas(timescale_url: str) -> None:
    rows = query(timescale_url, "SELECT hypertable_name, attname, segmentby_column_index, orderby_column_index,"
                                " orderby_asc, orderby_nullsfirst FROM timescaledb_information.compression_settings"
                                " WHERE hypertable_schema = 'public'")
    segment_by: dict[str, list[tuple[int, str]]] = {}
    order_by: dict[str, list[tuple[int, str]]] = {}
    for table, column, segment_index, order_index, ascending, nulls_first in rows:
        if segment_index is not None:
            segment_by.setdefault(table, []).append((segment_index, column))
        if order_index is not None:
            assert (ascending, nulls_first) == (True, False), (table, column)  # the schema's strings say ASC
            order_by.setdefault(table, []).append((order_index, column))
    assert {t: ", ".join(c for _, c in sorted(cols)) for t, cols in segment_by.items()} == schema.SEGMENT_BY
    assert {t: ", ".join(c for _, c in sorted(cols)) for t, cols in order_by.items()} == schema.ORDER_BY


def test_a_compressed_day_reads_back_unchanged_everywhere_and_stays_append_only(
    timescale_url: str, tmp_path: Path
) -> None:
    url = timescale_url
    records = sample_records(AT)
    write(url, tmp_path / "spool", [(raw(1, at=AT), records), *market_units()])
    before = {table: table_rows(url, table) for table in schema.FACT_TABLES}
    assert all(before.values()), "every fact table must hold rows of the day"
    answers = {sql: test_analysis.pg(url, sql, *params) for sql, params in test_analysis.QUERIES}

    for chunk, _ in chunks(url, DAY).values():
        query(url, "SELECT compress_chunk(%s)", chunk)
    assert {table: compressed for table, (_, compressed) in chunks(url, DAY).items()} == {
        table: True for table in schema.FACT_TABLES}

    # The tables: every row as it was, and the writer's records as they were written.
    assert {table: table_rows(url, table) for table in schema.FACT_TABLES} == before
    (raw_id,), = query(url, "SELECT id FROM raw_messages WHERE received_at = %s", AT)
    for record in records:
        columns = ", ".join(record._fields)
        assert query(url, f"SELECT raw_id, {columns} FROM {TABLE_OF[type(record)]} WHERE received_at = %s",
                     AT) == [(raw_id, *record)], type(record).__name__
    # The relations: the same answers, among them the scripted market's steam move.
    for sql, params in test_analysis.QUERIES:
        assert test_analysis.pg(url, sql, *params) == answers[sql], sql
    T, S = test_analysis.T, test_analysis.S
    assert test_analysis.pg(url, "SELECT first_bookmaker, started_at, movers FROM steam_moves(0.05, 3, '1 minute')"
                            ) == [("A", T + 10 * S, ["A", "B", "C"])]
    # The export: every table-day's Parquet equals PostgreSQL row by row; the relations over it agree.
    root = tmp_path / "export"
    exported = {table: assert_export_equals_postgresql(url, root, table, DAY) for table in schema.FACT_TABLES}
    assert exported == {table: len(rows) for table, rows in before.items()}
    lake = analysis.connect(export_dir=root)
    for sql, params in test_analysis.QUERIES:
        on_parquet = lake.execute(sql.replace("%s", "?"), list(params)).fetchall()
        assert test_analysis.same(on_parquet) == test_analysis.same(answers[sql]), sql

    # Append-only holds on compressed chunks, through the hypertable and through the chunk itself.
    chunk = chunks(url, DAY)["price_ticks"][0]
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in ("UPDATE price_ticks SET price = 1", "DELETE FROM price_ticks", "TRUNCATE price_ticks",
                          f"UPDATE {chunk} SET price = 1", f"DELETE FROM {chunk}",
                          f"DELETE FROM {chunk} WHERE source = 'oddspapi' AND fixture_id = 'F1'"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(statement)
    # What no trigger can refuse (TimescaleDB truncates a chunk itself; the compressed rows' own table
    # has no triggers) only the owner may do: the collector's and the analyst's roles may not.
    (compressed_table,), = query(url, "SELECT format('%%I.%%I', s.schema_name, s.table_name)"
                                      " FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.chunk s"
                                      " ON s.id = c.compressed_chunk_id WHERE format('%%I.%%I', c.schema_name,"
                                      " c.table_name)::regclass = %s::regclass", chunk)
    for role in ("warehouse_writer", "warehouse_reader"):
        login = test_roles.login(url, f"owh_{role}", role)
        with psycopg.connect(login, autocommit=True) as conn:
            for statement in (f"TRUNCATE {chunk}", f"DROP TABLE {chunk}", f"TRUNCATE {compressed_table}",
                              f"DELETE FROM {compressed_table}", f"SELECT decompress_chunk('{chunk}')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    assert table_rows(url, "price_ticks") == before["price_ticks"]

    # A late row (a spool replayed after an outage) lands in the compressed day and is exported with it.
    late = PriceTick(AT + timedelta(hours=12), "oddspapi", "A", "F1", "101", "101", 1.4)
    write(url, tmp_path / "spool", [(None, [late])])
    assert query(url, "SELECT price FROM price_ticks WHERE received_at = %s", late.received_at) == [(1.4,)]
    assert assert_export_equals_postgresql(url, root, "price_ticks", DAY) == len(before["price_ticks"]) + 1


def job(url: str, name: str) -> tuple[int, dict[str, Any]]:
    (found,) = query(url, "SELECT job_id, config FROM timescaledb_information.jobs WHERE hypertable_name = %s", name)
    return found


def run_job(url: str, job_id: int) -> None:
    """What the scheduler would do (the test server has none)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CALL run_job(%s)", (job_id,))


def test_the_compression_policy_compresses_days_older_than_a_week(timescale_url: str, tmp_path: Path) -> None:
    url = timescale_url
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in (10, 8, 6, 0)]
    write(url, tmp_path / "spool", [
        (raw(n, at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC)), [])
        for n, day in enumerate(days)])
    for table in schema.FACT_TABLES:
        assert job(url, table)[1]["compress_after"] == "7 days", table
    job_id, _ = job(url, "raw_messages")
    run_job(url, job_id)
    compressed = {day: chunks(url, day)["raw_messages"][1] for day in days}
    assert compressed == {days[0]: True, days[1]: True, days[2]: False, days[3]: False}
    assert query(url, "SELECT count(*) FROM raw_messages") == [(4,)]


def candles(url: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT * FROM price_candles_1m ORDER BY bucket, bookmaker, outcome_id")


def from_ticks(url: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT * FROM price_candles(INTERVAL '1 minute') ORDER BY bucket, bookmaker, outcome_id")


def test_the_candle_aggregate_equals_the_ticks_before_and_after_its_refresh_even_for_late_rows(
    timescale_url: str, tmp_path: Path
) -> None:
    """price_candles_1m is a real-time continuous aggregate: materialised by its policy, ticks newer
    than that read live. Whatever the policy has or has not done, it must equal the candles computed
    from the ticks — also for days older than the policy's window, and after late rows."""
    url = timescale_url
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = now - timedelta(days=5, hours=3)
    ticks = [PriceTick(when, "oddspapi", "A", "F1", "101", "101", price) for when, price in [
        (old, 2.0), (old + timedelta(seconds=20), 2.2), (now - timedelta(hours=2), 1.9),
        (now - timedelta(hours=2, seconds=-30), 1.8)]]
    write(url, tmp_path / "spool", [(None, [tick]) for tick in ticks])
    assert query(url, "SELECT materialized_only FROM timescaledb_information.continuous_aggregates"
                      " WHERE view_name = 'price_candles_1m'") == [(False,)]
    expected = from_ticks(url)
    assert [(row[0], row[9:]) for row in expected] == [
        (old, (2.0, 2.2, 2.0, 2.2, 2)), (now - timedelta(hours=2), (1.9, 1.9, 1.8, 1.8, 2))]
    assert candles(url) == expected  # nothing materialised yet: all read live

    job_id, config = job(url, "price_candles_1m")
    assert (config["start_offset"], config["end_offset"]) == (None, "00:01:00")  # all of history (migration 0005)
    run_job(url, job_id)
    (materialised,), = query(url, "SELECT format('%I.%I', materialization_hypertable_schema,"
                                  " materialization_hypertable_name)"
                                  " FROM timescaledb_information.continuous_aggregates")
    assert query(url, f"SELECT count(*) FROM {materialised}") == [(len(expected),)]  # the policy did materialise
    assert candles(url) == expected

    # A late row into a materialised bucket, written as the collector writes (the writer role).
    late = PriceTick(old + timedelta(seconds=40), "oddspapi", "A", "F1", "101", "101", 2.5)
    write(test_roles.login(url, "owh_collector", "warehouse_writer"), tmp_path / "spool", [(None, [late])])
    run_job(url, job_id)
    expected = from_ticks(url)
    assert expected[0][9:] == (2.0, 2.5, 2.0, 2.5, 3)
    assert candles(url) == expected
    assert candles(test_roles.login(url, "owh_analyst", "warehouse_reader")) == expected


@pytest.mark.parametrize("choice, layout", [("off", "native"), ("require", "timescaledb")])
def test_warehouse_timescaledb_chooses_on_a_server_that_offers_it(
    empty_timescale_url: str, monkeypatch: pytest.MonkeyPatch, choice: str, layout: str
) -> None:
    monkeypatch.setenv("WAREHOUSE_TIMESCALEDB", choice)
    migrate.upgrade(empty_timescale_url)
    assert query(empty_timescale_url, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == [(layout,)]
    extension = query(empty_timescale_url, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    assert extension == [(1 if layout == "timescaledb" else 0,)]
