"""The query surface on hot days (issue 28): a fixture's rows are an index lookup in PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest

from tests.conftest import query
from tests.surfacekit import COLD_DAYS, TICKS, retain
from tests.test_query_surface import DAYS, at, write
from warehouse import lake
from warehouse.analysis import statement, surface
from warehouse.analysis.engine import Engine
from warehouse.analysis.hot import tables_read
from warehouse.analysis.relations import GAPS, LINE_MOVEMENT
from warehouse.lifecycle.export import export_all
from warehouse.lifecycle.pending import pending
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
    try:
        assert con.execute(sql).fetchall(), sql
    finally:
        con.execute("SET pg_debug_show_queries = false")  # a setting of the whole process
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


def test_engine_rows_are_postgresqls_while_every_day_is_hot_then_the_surfaces(storage_url: str,
                                                                              tmp_path: Path) -> None:
    """A warehouse of five days, none retained: the plot's line movement is PostgreSQL's answer (one
    read-only transaction). Once retention drops two days, the same call is the surface's: every row."""
    url = storage_url
    query(url, "SELECT warehouse_ensure_partitions(%s, %s)", DAYS[0], len(DAYS))
    write(url, tmp_path / "spool", TICKS)
    engine = Engine.warehouse(url)
    assert engine.hot is not None
    expected = [(at(day, hour), price) for day, hour, price in TICKS]
    hot = engine.hot.rows(LINE_MOVEMENT, ("F", "M"))
    assert hot is not None and [(row[0], row[7]) for row in hot] == expected
    assert engine.rows(LINE_MOVEMENT, "F", "M") == hot == Engine(engine.con).rows(LINE_MOVEMENT, "F", "M")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        engine.hot.rows("DELETE FROM retention_runs", ())

    root = tmp_path / "lake"
    export_all(url, root, pending(url, lake.EXPORT_TABLES))
    retain(url, root, 3)
    assert engine.hot.rows(LINE_MOVEMENT, ("F", "M")) is None  # price_ticks has cold days now
    assert "price_ticks" in engine.hot.cold  # … and is not asked again
    assert engine.hot.rows("SELECT count(*) FROM score_changes", ()) == [(0,)]  # … score_changes none
    engine = Engine.warehouse(url)  # a surface reads the lakes there were when it opened
    assert [(row[0], row[7]) for row in engine.rows(LINE_MOVEMENT, "F", "M")] == expected
    assert len(query(url, LINE_MOVEMENT, "F", "M")) == len(expected) - 2 * len(COLD_DAYS)


def test_a_relation_whose_columns_change_under_an_open_engine_is_read_anew(db_url: str) -> None:
    """Statements on the hot path are prepared; a relation redefined while an Engine is open (a migration
    under a notebook) makes PostgreSQL refuse the prepared one: the Engine asks in a new session."""
    with psycopg.connect(db_url, autocommit=True) as ddl:
        ddl.execute("CREATE VIEW probe_relation AS SELECT 1 AS a")
        hot = Engine.warehouse(db_url).hot
        assert hot is not None
        try:
            assert hot.rows("SELECT * FROM probe_relation", ()) == [(1,)]
            ddl.execute("DROP VIEW probe_relation")
            ddl.execute("CREATE VIEW probe_relation AS SELECT 'x'::text AS a, 2 AS b")
            assert hot.rows("SELECT * FROM probe_relation", ()) == [("x", 2)]
        finally:
            hot.close()


def test_the_tables_a_statement_reads_include_those_of_its_relations() -> None:
    assert tables_read(LINE_MOVEMENT) == {"price_ticks", "fixture_changes", "market_changes"}
    assert tables_read(GAPS) == {"price_ticks", "collector_events"}
    assert tables_read("SELECT * FROM price_candles_1m") >= {"price_ticks"}
    assert tables_read("SELECT * FROM Score_Changes") == {"score_changes"}


def test_a_subquery_given_to_a_relation_is_worked_out_once_and_its_value_reaches_the_scan(
        db_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    """DuckDB writes a relation's body out in place, so a subquery argument was worked out again at every
    use inside it (the README's consensus example: 223 s against 0.9 s) and no scan could take it as a
    filter. `warehouse query` and Engine give the relation its value instead: the same rows."""
    fill(db_url)  # G's tick a minute before F's
    engine = Engine.warehouse(db_url)
    sql = ("SELECT fixture_id, price FROM prices_as_of((SELECT max(received_at) FROM price_ticks"
           " WHERE fixture_id = 'G')) ORDER BY fixture_id")
    written = statement.indexable(engine.con, sql)
    assert "max(" not in written and f"CAST('{NOW - timedelta(minutes=1):%Y-%m-%d %H:%M:%S}+00'" in written
    bounded = """"received_at" <= '"""
    assert not any(bounded in sent for sent in sent_to_postgres(db_url, sql, capfd))
    assert all(bounded in sent for sent in sent_to_postgres(db_url, written, capfd))
    assert engine.read(sql)[1] == [("G", 2.5)] == query(db_url, sql)
    # What needs the statement around it stays as written: a column of FROM, a parameter.
    lateral = ("SELECT p.fixture_id, p.price FROM (SELECT max(received_at) AS at FROM price_ticks"
               " WHERE fixture_id = 'G') AS m, prices_as_of(m.at) AS p ORDER BY 1")
    assert "CAST(" not in statement.indexable(engine.con, lateral) and engine.read(lateral)[1] == [("G", 2.5)]
    with_parameter = ("SELECT fixture_id FROM prices_as_of((SELECT max(received_at) FROM price_ticks"
                      " WHERE fixture_id = ?))")
    assert "max(" in statement.indexable(engine.con, with_parameter)
    # A WITH whose name shadows a table: alone, the subquery would read the (empty) table instead.
    shadowed = ("WITH collector_events AS (SELECT received_at FROM price_ticks WHERE fixture_id = 'G')"
                " SELECT fixture_id FROM prices_as_of((SELECT max(received_at) FROM collector_events))")
    assert "max(" in statement.indexable(engine.con, shadowed) and engine.read(shadowed)[1] == [("G",)]
