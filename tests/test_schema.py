"""Migrations, the append-only guarantees and the roles, against a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from tests.conftest import query
from warehouse import schema as tables
from warehouse.analysis import relations
from warehouse.store import migrate
from warehouse.store.database import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent
HEAD = migrate.head_revision()
DESIGN_TABLES = {
    "raw_messages", "price_ticks", "market_changes", "fixture_changes", "score_changes", "order_changes",
    "bet_changes", "account_changes", "emergency_events", "collector_events", "quarantine", "export_runs",
    "retention_runs", "job_runs",
}


def test_the_shipped_revisions_are_read_as_alembic_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command checks the schema against migrate.head_revision(), read from the migration files
    without Alembic (its import was ~0.13 s of each command's start); upgrades run through Alembic, so both
    must agree: on the shipped migrations, and on a folder with a second head, which is refused."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://"))
    assert script.get_current_head() == HEAD
    assert migrate._revisions() == {s.revision for s in script.walk_revisions()}
    assert {r: set(d) for r, d in migrate._chain().items()} == {
        s.revision: set((s.down_revision,) if isinstance(s.down_revision, str) else s.down_revision or ())
        for s in script.walk_revisions()}

    forked = tmp_path / "migrations"
    shutil.copytree(migrate.migrations_dir(), forked)
    (forked / "versions" / "0019_other.py").write_text('revision = "0019"\ndown_revision = "0017"\n')
    monkeypatch.setattr(migrate, "migrations_dir", lambda: forked)
    migrate._chain.cache_clear()
    try:
        with pytest.raises(migrate.SchemaError, match=r"2 heads \(\['0018', '0019'\]\)"):
            migrate.head_revision()
    finally:
        migrate._chain.cache_clear()


def test_every_design_table_and_the_candle_view_exist(storage_url: str) -> None:
    names = {r[0] for r in query(storage_url, "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p', 'v', 'm')")}
    assert names >= DESIGN_TABLES
    assert {"price_candles_1m", "ingest_batches", "warehouse_meta"} <= names
    assert set(tables.APPEND_ONLY_TABLES) == DESIGN_TABLES


def test_fact_tables_are_stored_by_day(storage_url: str, storage: str) -> None:
    """Native: daily range partitions made ahead, and a default one; TimescaleDB: hypertables of 1-day chunks."""
    layout = "timescaledb" if storage == "timescaledb" else "native"
    assert query(storage_url, "SELECT value FROM warehouse_meta WHERE key = 'storage'") == [(layout,)]
    today = datetime.now(UTC).date()
    if layout == "timescaledb":
        dimensions = query(storage_url, "SELECT hypertable_name, column_name, time_interval"
                                        " FROM timescaledb_information.dimensions WHERE hypertable_schema = 'public'"
                                        " ORDER BY 1")
        assert dimensions == [(t, "received_at", timedelta(days=1)) for t in sorted(tables.FACT_TABLES)]
        assert query(storage_url, "SELECT count(*) FROM pg_inherits") == [(0,)]  # no chunk before a row
        return
    for table in tables.FACT_TABLES:
        parts = {r[0] for r in query(storage_url, "SELECT inhrelid::regclass::text FROM pg_inherits"
                                                  " WHERE inhparent = %s::regclass", table)}
        assert f"{table}_default" in parts
        for ahead in range(3):
            assert f"{table}_p{(today + timedelta(days=ahead)):%Y%m%d}" in parts


def test_migrated_schema_matches_the_sqlalchemy_tables(storage_url: str) -> None:
    engine = create_engine(sqlalchemy_url(storage_url), poolclass=pool.NullPool)
    known = set(tables.metadata.tables)

    def include(obj, name, type_, reflected, compare_to):  # partitions and views are not in metadata
        return type_ != "table" or name in known

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include})
        diff = compare_metadata(context, tables.metadata)
    engine.dispose()
    assert diff == []


@pytest.mark.parametrize("table", tables.APPEND_ONLY_TABLES)
def test_update_delete_truncate_are_rejected(storage_url: str, table: str) -> None:
    with psycopg.connect(storage_url, autocommit=True) as conn:
        # DELETE that matches no row, UPDATE of nothing, TRUNCATE: all refused, even on an empty table.
        update = {"export_runs": "rows = rows", "retention_runs": "rows = rows", "job_runs": "ok = ok"}
        for statement in (f"UPDATE {table} SET {update.get(table, 'source = source')}",
                          f"DELETE FROM {table}", f"TRUNCATE {table}"):
            with pytest.raises(psycopg.errors.RestrictViolation, match=f"{table}.* is append-only"):
                conn.execute(statement)


def test_rows_cannot_be_changed_through_their_partition_or_chunk(storage_url: str, storage: str) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(storage_url, autocommit=True) as conn:
        conn.execute("INSERT INTO price_ticks (received_at, source, fixture_id, market_id, outcome_id, price)"
                     " VALUES (%s, 's', 'f', 'm', 'o', 1.5)", (now,))
        if storage == "timescaledb":
            # TimescaleDB clones the row triggers onto each chunk. TRUNCATE of a chunk it carries out
            # itself, firing no trigger: only the owner may do it (test_roles, test_timescaledb).
            (chunk,), = conn.execute("SELECT show_chunks('price_ticks')::text").fetchall()
            statements = [f"UPDATE {chunk} SET price = 2", f"DELETE FROM {chunk}"]
        else:
            partition = f"price_ticks_p{now:%Y%m%d}"
            statements = [f"UPDATE {partition} SET price = 2", f"DELETE FROM {partition}", f"TRUNCATE {partition}",
                          "DELETE FROM price_ticks_default", "TRUNCATE price_ticks_default"]
        for statement in statements:
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT price FROM price_ticks").fetchall() == [(1.5,)]


def test_writer_role_inserts_but_cannot_update_and_reader_cannot_insert(storage_url: str) -> None:
    insert = ("INSERT INTO collector_events (received_at, source, event) VALUES (now(), 'x', 'connect')")
    with psycopg.connect(storage_url, autocommit=True) as conn:
        conn.execute("SET ROLE warehouse_writer")
        conn.execute(insert)
        conn.execute("SELECT warehouse_ensure_partitions(current_date + 10, 1)")  # DDL via the definer function
        conn.execute("SELECT nextval('raw_messages_id_seq')")
        assert conn.execute("SELECT count(*) FROM collector_events").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE collector_events SET source = 'y'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM price_ticks")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (x int)")
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE warehouse_reader")
        assert conn.execute("SELECT count(*) FROM collector_events").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM price_candles_1m").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(insert)


def test_candle_view_gives_open_high_low_close_per_minute(storage_url: str) -> None:
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    prices = [(0, 2.0), (10, 2.4), (20, 1.9), (50, 2.1), (61, 3.0)]
    with psycopg.connect(storage_url, autocommit=True) as conn:
        for seconds, price in prices:
            conn.execute(
                "INSERT INTO price_ticks (received_at, source, bookmaker, fixture_id, market_id, outcome_id, price)"
                " VALUES (%s, 's', 'b', 'f', 'm', 'o', %s)", (base + timedelta(seconds=seconds), price),
            )
        rows = conn.execute("SELECT bucket, open, high, low, close, ticks FROM price_candles_1m"
                            " ORDER BY bucket").fetchall()
    assert rows == [(base, 2.0, 2.4, 1.9, 2.1, 4), (base + timedelta(minutes=1), 3.0, 3.0, 3.0, 3.0, 1)]


def test_downgrade_to_base_then_upgrade_again(empty_storage_url: str) -> None:
    url = empty_storage_url
    migrate.upgrade(url)
    assert migrate.current_revision(url) == HEAD
    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    left = query(url, "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " WHERE n.nspname = 'public' AND relname NOT LIKE 'alembic_version%'")
    assert left == []
    functions = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'warehouse_%%' OR proname = ANY(%s)"
    assert query(url, functions, [r.name for r in relations.CURRENT]) == [(0,)]
    migrate.upgrade(url)
    assert migrate.current_revision(url) == HEAD


def test_plain_alembic_command_uses_the_configured_database(empty_db_url: str) -> None:
    env = dict(os.environ, WAREHOUSE_DATABASE_URL=empty_db_url)
    result = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(empty_db_url) == HEAD


def test_forcing_timescaledb_on_a_server_without_it_fails_clearly(empty_db_url: str, monkeypatch) -> None:
    monkeypatch.setenv("WAREHOUSE_TIMESCALEDB", "require")
    with pytest.raises(RuntimeError, match="does not offer a preloaded timescaledb"):
        migrate.upgrade(empty_db_url)
    assert migrate.current_revision(empty_db_url) is None
