"""The query surface on hot days (issue 28): a fixture's rows are an index lookup in PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import duckdb
import psycopg
import pytest

from tests.conftest import query
from warehouse.analysis import statement, surface
from warehouse.store.duckdb import ATTACHED, duckdb_connection

NOW = datetime.now(UTC).replace(microsecond=0)


def fill(url: str) -> None:
    """Two fixtures' prices, and a fixture change each, in today's partition."""
    query(url, "SELECT warehouse_ensure_partitions(%s, 1)", NOW.date())
    with psycopg.connect(url, autocommit=True) as conn:
        for n, fixture in enumerate(("F", "G")):
            conn.execute("INSERT INTO price_ticks (received_at, source, raw_id, bookmaker, fixture_id, market_id,"
                         " outcome_id, price, active) VALUES (%s, 'op', %s, 'book', %s, 'M', 'home', 2.5, true)",
                         (NOW - timedelta(minutes=n), n, fixture))
            conn.execute("INSERT INTO fixture_changes (received_at, source, raw_id, fixture_id, action, changes)"
                         " VALUES (%s, 'op', %s, %s, 'update', '{\"suspended\": false}')", (NOW, 10 + n, fixture))


def sent_to_postgres(url: str, sql: str, capfd: pytest.CaptureFixture[str]) -> list[str]:
    """The SELECTs DuckDB's postgres scan sends for `sql` on the surface (its debug print of each COPY, on stderr)."""
    con = duckdb_connection(url)
    surface.build(con, hot=ATTACHED, cold=None)
    con.execute("SET pg_debug_show_queries = true")
    capfd.readouterr()
    rows = con.execute(sql).fetchall()
    assert rows, sql
    printed = capfd.readouterr().err
    return re.findall(r"COPY \((SELECT .*?)\) TO STDOUT", printed)


def plan(url: str, select: str) -> str:
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")  # the index whenever PostgreSQL can use it, however few the rows
        return "\n".join(row[0] for row in conn.execute(f"EXPLAIN {select}"))


def test_a_fixture_filter_reaches_the_index_on_every_storage(storage_url: str,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    fill(storage_url)
    sql = "SELECT price FROM price_ticks WHERE fixture_id = 'F' AND market_id = 'M'"
    (as_written,) = sent_to_postgres(storage_url, sql, capfd)
    # The cause: DuckDB hands PostgreSQL an equality on text in the C collation, which the index (built
    # with the database's) cannot serve — a sequential scan of every hot row.
    assert """"fixture_id" = 'F' COLLATE "C\"""" in as_written
    assert "Seq Scan" in plan(storage_url, as_written)
    (indexable,) = sent_to_postgres(storage_url, statement.indexable(duckdb.connect(), sql), capfd)
    assert """"fixture_id" IN ('F', 'F')""" in indexable
    scan = plan(storage_url, indexable)
    assert "Index" in scan and "Seq Scan" not in scan, scan
