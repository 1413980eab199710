"""Cold days are read checked, not on trust (issue 21 item 4): before any query reads a table, each of
its retained files is compared with what retention recorded — the file is there, has the size and
the footer row count recorded, and its footer reads — and a failing table-day fails the queries on
its table only, with one line naming the table and the day. A day retention drops while a connection
is open is read from its file by that connection's next query.

What these checks cannot see — a valid file of the same size and row count holding other values, a
bit flipped inside a data page — is `warehouse verify-lake`'s (every byte against the recorded
sha256): docs/reliability.md."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.conftest import query
from tests.surfacekit import COLD_DAYS, DAYS, TICKS, one_line, retain, retained_warehouse, warehouse
from warehouse import analysis
from warehouse.analysis import surface
from warehouse.analysis.surface import ColdDay
from warehouse.lifecycle import layout


def other_rows(path: Path, into: Path) -> None:
    """A valid Parquet file of the table with one row more than `path`: another export's."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"COPY (SELECT * FROM read_parquet('{path}') UNION ALL (SELECT * REPLACE (price * 100 AS price)"
                f" FROM read_parquet('{path}') LIMIT 1)) TO '{into}' (FORMAT parquet)")


def truncate(path: Path, into: Path) -> None:
    into.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def flip_footer(path: Path, into: Path) -> None:
    """One bit flipped in the footer's length (the 8 bytes before the trailing magic): same size."""
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x10
    into.write_bytes(bytes(data))


OTHER_SIZE = r"is [\d,]+ bytes, not the [\d,]+ recorded when it was exported"
DAMAGE = {"replaced by a file of other rows": (other_rows, OTHER_SIZE),
          "truncated": (truncate, OTHER_SIZE),
          "a bit flipped in its footer": (flip_footer, "is not a readable Parquet file")}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cold_file_fails_the_queries_on_its_table_only_naming_it(db_url: str, tmp_path: Path,
                                                                          damage: str) -> None:
    root = retained_warehouse(db_url, tmp_path)
    con = analysis.connect(db_url)  # opened before the damage: it checks again at every query
    file = layout.file(root, "price_ticks", COLD_DAYS[1])
    spoil, said = DAMAGE[damage]
    spoil(file, tmp_path / "spoilt.parquet")
    shutil.move(tmp_path / "spoilt.parquet", file)

    for reader in (con, analysis.connect(db_url)):  # the open connection, and a new one
        for sql in ("SELECT count(*) FROM price_ticks", "SELECT sum(price) FROM price_ticks",
                    f"SELECT count(*) FROM price_ticks WHERE received_at >= '{DAYS[3]}'",
                    "SELECT count(*) FROM price_history"):
            named = f"price_ticks {COLD_DAYS[1]}: its file {re.escape(str(file))} {said}"
            with pytest.raises(duckdb.Error, match=named):
                reader.execute(sql).fetchall()
        # every other table, the other cold day's files included, reads as before
        assert reader.execute("SELECT count(*) FROM collector_events").fetchone() == (len(DAYS),)
        assert reader.execute("SELECT count(*) FROM raw_messages").fetchone() == (len(TICKS),)
    result = warehouse("query", "SELECT count(*) FROM price_ticks", "--database-url", db_url)
    assert result.returncode == 2
    assert re.match(f"error: the query failed: Invalid Input Error: price_ticks {COLD_DAYS[1]}: its file"
                    f" {re.escape(str(file))} {said}", one_line(result.stderr)), result.stderr
    assert warehouse("query", "SELECT count(*) FROM raw_messages", "--database-url", db_url).returncode == 0


def test_a_file_of_another_row_count_is_refused_where_no_size_was_recorded(db_url: str, tmp_path: Path) -> None:
    # retention_runs rows written before migration 0009 have no size: the footer's row count still counts
    root = retained_warehouse(db_url, tmp_path)
    file = layout.file(root, "price_ticks", COLD_DAYS[0])
    assert surface.check(ColdDay(COLD_DAYS[0], str(file), rows=2)) is None
    other_rows(file, tmp_path / "other.parquet")
    shutil.move(tmp_path / "other.parquet", file)
    assert surface.check(ColdDay(COLD_DAYS[0], str(file), rows=2)) == (
        f"its file {file} holds 3 rows, not the 2 recorded when it was exported; it is the day's only copy:"
        " restore it from a backup of the lake (queries on other tables run)")


def test_a_missing_cold_file_is_named(db_url: str, tmp_path: Path) -> None:
    root = retained_warehouse(db_url, tmp_path)
    file = layout.file(root, "price_ticks", COLD_DAYS[0])
    file.unlink()
    with pytest.raises(duckdb.Error, match=f"price_ticks {COLD_DAYS[0]}: its file {re.escape(str(file))} is missing"):
        analysis.connect(db_url).execute("SELECT count(*) FROM price_ticks").fetchall()


def test_retention_records_each_files_size_and_the_surface_holds_it_to_it(db_url: str, tmp_path: Path) -> None:
    root = retained_warehouse(db_url, tmp_path)
    recorded = query(db_url, "SELECT table_name, day, path, bytes FROM retention_runs WHERE rows > 0")
    assert recorded
    for table, day, path, size in recorded:
        assert path == str(layout.file(root, table, day)) and size == Path(path).stat().st_size > 0, path
    exported = query(db_url, "SELECT path, bytes FROM export_runs")
    assert all(size == Path(path).stat().st_size for path, size in exported)


def test_a_day_retention_drops_while_a_connection_is_open_is_read_by_its_next_query(db_url: str,
                                                                                    tmp_path: Path) -> None:
    root = retained_warehouse(db_url, tmp_path)
    con = analysis.connect(db_url)
    assert con.execute("SELECT count(*), sum(price) FROM price_ticks").fetchall() == [
        (len(TICKS), pytest.approx(sum(price for _, _, price in TICKS)))]
    retain(db_url, root, 1)
    assert query(db_url, "SELECT count(*) FROM price_ticks") == [(2,)]  # today's, the rest in the lake
    assert con.execute("SELECT count(*), sum(price) FROM price_ticks").fetchall() == [
        (len(TICKS), pytest.approx(sum(price for _, _, price in TICKS)))]
