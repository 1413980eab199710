"""The query surface only reads (issue 21 item 3, issue 26 item 5): every way `warehouse query` could
write — a lake file, a file anywhere, PostgreSQL past its read-only attachment, a new database — is
refused with one line before it runs, and so are several statements at once and an empty one. A
connection from `warehouse.analysis.connect()` reads no file outside the lake, attaches and loads
nothing, and its settings cannot change."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from tests.conftest import query
from tests.surfacekit import COLD_DAYS, one_line, retained_warehouse, warehouse
from warehouse import analysis
from warehouse.analysis.engine import Engine
from warehouse.lifecycle import layout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_way_to_write_through_warehouse_query_is_refused_with_one_line(db_url: str, tmp_path: Path) -> None:
    root = retained_warehouse(db_url, tmp_path)
    cold = layout.file(root, "price_ticks", COLD_DAYS[0])
    before = sha256(cold)
    runs = query(db_url, "SELECT count(*) FROM export_runs")
    elsewhere, attached = tmp_path / "out.csv", tmp_path / "new.duckdb"
    insert = ("INSERT INTO export_runs (table_name, day, rows, path, sha256, started_at, finished_at)"
              " VALUES (''price_ticks'', current_date, 0, ''/x'', ''x'', now(), now())")
    attacks = {
        f"COPY (SELECT * FROM price_ticks WHERE false) TO '{cold}' (FORMAT parquet)": "COPY statements are refused",
        f"COPY (SELECT 1 AS x) TO '{elsewhere}'": "COPY statements are refused",
        f"ATTACH '{db_url}' AS rw (TYPE postgres)": "ATTACH statements are refused",
        f"CALL postgres_execute('pg', 'COMMIT; {insert}')": "CALL statements are refused",
        f"SELECT * FROM postgres_execute('pg', 'COMMIT; {insert}')": "postgres_execute() is refused",
        "SELECT * FROM query('SELECT * FROM postgres_execute(''pg'', ''COMMIT'')')": "query() is refused",
        f"ATTACH '{attached}' AS n": "ATTACH statements are refused",
        "SELECT 1; SELECT 2": "2 statements given",
        "SET enable_external_access = true": "SET statements are refused",
        "RESET lock_configuration": "SET statements are refused",
        "INSTALL httpfs": "INSTALL and LOAD statements are refused",
        "LOAD httpfs": "INSTALL and LOAD statements are refused",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{elsewhere}'": "COPY statements are refused",
        "": "no SQL statement given",
        "-- only a comment": "no SQL statement given",
    }
    engine = Engine.warehouse(db_url)  # what `warehouse query` runs the SQL with
    for sql, said in attacks.items():
        with pytest.raises(ValueError) as refused:
            engine.read(sql)
        assert str(refused.value).startswith(said), (sql, refused.value)
        assert "\n" not in str(refused.value)
    for sql in [*list(attacks)[:2], "SELECT 1; SELECT 2", ""]:  # and the command says it in one line
        result = warehouse("query", sql, "--database-url", db_url)
        assert result.returncode == 2, (sql, result.stdout, result.stderr)
        assert one_line(result.stderr).startswith(f"error: {attacks[sql]}"), (sql, result.stderr)
    assert sha256(cold) == before
    assert not elsewhere.exists() and not attached.exists()
    assert query(db_url, "SELECT count(*) FROM export_runs") == runs
    # what reads still runs: SELECT, EXPLAIN of one, DESCRIBE, a trailing semicolon, a comment first
    for sql in ("SELECT count(*) FROM price_ticks;", "EXPLAIN SELECT count(*) FROM price_ticks",
                "DESCRIBE price_ticks", "-- a comment first\nFROM price_history LIMIT 1"):
        engine.read(sql)


@pytest.mark.parametrize("where", ["warehouse", "export"])
def test_a_surface_connection_reads_the_lake_and_nothing_else(db_url: str, tmp_path: Path, where: str) -> None:
    root = retained_warehouse(db_url, tmp_path)
    con = analysis.connect(db_url) if where == "warehouse" else analysis.connect(export_dir=root)
    ticks = 10 if where == "warehouse" else 8  # an export holds complete days: today is not in it
    assert con.execute("SELECT count(*) FROM price_ticks").fetchone() == (ticks,)
    outside = tmp_path / "outside.parquet"
    duckdb.connect().execute(f"COPY (SELECT 1 AS x) TO '{outside}' (FORMAT parquet)")
    refused = {
        f"SELECT * FROM read_parquet('{outside}')": duckdb.PermissionException,
        "SELECT * FROM read_csv('/etc/passwd')": duckdb.PermissionException,
        f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'": duckdb.PermissionException,
        f"ATTACH '{tmp_path / 'new.duckdb'}' AS n": duckdb.PermissionException,
        f"ATTACH '{db_url}' AS rw (TYPE postgres)": duckdb.Error,
        "SET enable_external_access = true": duckdb.InvalidInputException,
        "RESET allowed_directories": duckdb.InvalidInputException,
        "SET lock_configuration = false": duckdb.InvalidInputException,
        "INSTALL httpfs": duckdb.Error,
        "LOAD httpfs": duckdb.Error,
    }
    for sql, error in refused.items():
        with pytest.raises(error):
            con.execute(sql)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "new.duckdb").exists()
    if where == "warehouse":  # PostgreSQL is attached read-only
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("INSERT INTO pg.public.export_runs (table_name) VALUES ('x')")
    assert con.execute("SELECT count(*) FROM price_ticks").fetchone() == (ticks,)  # and it still reads


def test_a_lake_reached_through_links_is_read(db_url: str, tmp_path: Path) -> None:
    # DuckDB resolves a link before it checks a path against the directories the connection may read
    root = retained_warehouse(db_url, tmp_path)
    (tmp_path / "linked").symlink_to(root, target_is_directory=True)
    assert analysis.connect(export_dir=tmp_path / "linked").execute("SELECT count(*) FROM price_ticks").fetchone() == (
        8,)
    cold = tmp_path / "cold"  # day folders linked one by one (bench/lifecycle.py's cold-only lake)
    for day in COLD_DAYS:
        link = layout.file(cold, "price_ticks", day).parent
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(layout.file(root, "price_ticks", day).parent, target_is_directory=True)
    assert analysis.connect(export_dir=cold).execute("SELECT count(*) FROM price_ticks").fetchone() == (4,)
