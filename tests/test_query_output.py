"""What `warehouse query` prints is readable (issue 26 item 13): a result too wide for a table is shown a
record per row, every value whole; CSV and JSON write numbers as PostgreSQL writes them (`500`, not the
lake decimal's `500.000000000000000000`), booleans true/false, and columns named as PostgreSQL names
them (`count`, not `count_star()`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.surfacekit import warehouse
from tests.test_query_surface import TODAY, at, write

COUNTS = ("SELECT count(*), count(DISTINCT bookmaker), sum(max_stake), max(price)::DECIMAL(10, 3),"
          " CAST(500 AS DECIMAL(38, 18)) AS stake, min(line), bool_and(active IS NULL), false AS shown,"
          " min(received_at) AS first FROM price_ticks")


def test_csv_and_json_write_numbers_booleans_and_names_as_postgresql(db_url: str, tmp_path: Path) -> None:
    write(db_url, tmp_path / "spool", [(TODAY, 1, 2.5), (TODAY, 2, 2.25)])
    result = warehouse("query", COUNTS, "--format", "csv", "--database-url", db_url)
    assert result.returncode == 0, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["count", "count_2", "sum", "max", "stake", "min", "bool_and", "shown", "first"],
        ["2", "1", "2469135780.246913578024691356", "2.5", "500", "-0.25", "true", "false", at(TODAY, 1).isoformat()]]
    result = warehouse("query", COUNTS, "--format", "json", "--database-url", db_url)
    assert json.loads(result.stdout) == [{"count": 2, "count_2": 1, "sum": "2469135780.246913578024691356",
                                          "max": "2.5", "stake": "500", "min": "-0.25", "bool_and": True,
                                          "shown": False, "first": at(TODAY, 1).isoformat()}]


def test_a_result_too_wide_for_a_table_is_a_record_per_row_every_value_whole(db_url: str, tmp_path: Path) -> None:
    write(db_url, tmp_path / "spool", [(TODAY, 1, 2.5), (TODAY, 2, 2.25)])
    note = "a long note that a table squeezed into the terminal would cut " * 2
    result = warehouse("query", f"SELECT *, '{note}' AS note FROM price_ticks ORDER BY received_at",
                       "--database-url", db_url)
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("-[ row ")
    assert len(blocks) == 3 and blocks[1].startswith("1 ]") and blocks[2].startswith("2 ]"), result.stdout
    for block, hour in zip(blocks[1:], (1, 2), strict=True):
        shown = {name.strip(): value for name, value in (line.split(" | ", 1) for line in block.splitlines()[1:]
                                                         if " | " in line)}
        expected = {"received_at": at(TODAY, hour).isoformat(), "fixture_id": "F", "line": "-0.25", "note": note,
                    "max_stake": "1234567890.123456789012345678", "attrs": f'{{"n": {hour}}}'}
        assert {name: shown.get(name) for name in expected} == expected
    assert result.stdout.rstrip().endswith("2 rows")
    # narrow enough: a table, as before
    narrow = warehouse("query", "SELECT fixture_id, price FROM price_ticks ORDER BY price", "--database-url", db_url)
    assert "┃ fixture_id ┃ price ┃" in narrow.stdout and "│ F          │ 2.25  │" in narrow.stdout
