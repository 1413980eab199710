"""One query surface over hot and cold days (issue 14 item 5): every row once, wherever it lives now."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from tests.conftest import query
from warehouse import analysis, lake
from warehouse.config import WriterSettings
from warehouse.lifecycle.export import export_all
from warehouse.lifecycle.pending import pending
from warehouse.records import CollectorEvent, PriceTick, RawMessage
from warehouse.store.writer import Writer

CONN = UUID("0b7e7d3c-5f7c-4a8e-9d2f-444444444444")
TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (4, 3, 2, 1, 0)]  # the first two will be dropped by retention


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def write(url: str, spool: Path, ticks: list[tuple[date, int, float]]) -> None:
    """One frame and one tick of fixture F/market M per (day, hour, price), plus a connect event per day."""

    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=spool)) as writer:
            for day, hour, price in ticks:
                seq = int(at(day, hour).timestamp())
                await writer.put(RawMessage(at(day, hour), "op", CONN, seq, "price", b'{"p": 1}'), [
                    PriceTick(at(day, hour), "op", "book", "F", "M", "home", price, line=Decimal("-0.25"),
                              max_stake=Decimal("1234567890.123456789012345678"), attrs={"n": hour})])
                if hour == 1:
                    await writer.put(None, [CollectorEvent(at(day, 0), "op", CONN, "connect", {"day": str(day)})])

    asyncio.run(main())


def warehouse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", *args], capture_output=True, text=True, timeout=180,
                          env=os.environ)


def test_hot_and_cold_days_read_as_one_warehouse_each_row_once(storage_url: str, tmp_path: Path) -> None:
    url = storage_url
    query(url, "SELECT warehouse_ensure_partitions(%s, %s)", DAYS[0], len(DAYS))
    ticks = [(day, hour, 2.0 + n / 10 + hour / 100) for n, day in enumerate(DAYS) for hour in (1, 13)]
    write(url, tmp_path / "spool", ticks)
    export_all(url, tmp_path / "exports", pending(url, lake.EXPORT_TABLES))
    config = tmp_path / "warehouse.toml"
    config.write_text('[export]\ndir = "exports"\n')  # the lake retention trusts
    retained = warehouse("retain", "--keep-days", "3", "--database-url", url, "--config", str(config))
    assert retained.returncode == 0, retained.stderr
    assert query(url, "SELECT count(*) FROM price_ticks") == [(6,)]  # three days left in PostgreSQL
    assert query(url, "SELECT count(DISTINCT day) FROM retention_runs WHERE rows > 0") == [(2,)]
    write(url, tmp_path / "spool", [(DAYS[0], 22, 9.5)])  # a late row for a dropped day: stays in PostgreSQL

    con = analysis.connect(url)
    assert con.execute("SELECT count(*) FROM price_ticks").fetchone() == (len(ticks) + 1,)
    assert con.execute("SELECT count(*) FROM raw_messages").fetchone() == (len(ticks) + 1,)
    assert con.execute("SELECT count(*) FROM collector_events").fetchone() == (len(DAYS),)
    rows = con.execute("SELECT received_at, price, line, max_stake, attrs FROM price_ticks"
                       " WHERE fixture_id = 'F' AND market_id = 'M' ORDER BY received_at").fetchall()
    expected = sorted([*ticks, (DAYS[0], 22, 9.5)], key=lambda t: at(t[0], t[1]))
    assert [(r[0], r[1]) for r in rows] == [(at(day, hour), price) for day, hour, price in expected]
    assert {(r[2], r[3]) for r in rows} == {(Decimal("-0.25"), Decimal("1234567890.123456789012345678"))}
    assert [json.loads(r[4]) for r in rows[:2]] == [{"n": 1}, {"n": 13}]
    # the relations run across the boundary: the first hot day's first price follows the last cold one
    history = con.execute("SELECT received_at, prev_price FROM price_history WHERE fixture_id = 'F'"
                          " ORDER BY received_at").fetchall()
    first_hot = next(n for n, (when, _) in enumerate(history) if when.date() == DAYS[2])
    assert history[first_hot][1] == expected[first_hot - 1][2]
    assert con.execute("SELECT count(*) FROM price_candles(INTERVAL '1 hour')").fetchone() == (len(expected),)


def test_the_lake_views_give_duckdb_the_lake_types(storage_url: str) -> None:
    con = analysis.connect(storage_url)
    for table in lake.EXPORT_TABLES:
        described = [(row[0], row[1]) for row in con.execute(f"DESCRIBE pg.warehouse_lake.{table}").fetchall()]
        canonical = [(name, con.execute(f"SELECT typeof(CAST(NULL AS {kind}))").fetchone()[0])
                     for name, kind in lake.columns(table)]
        assert described == canonical, table


def test_warehouse_query_prints_a_table_csv_or_json(db_url: str, tmp_path: Path) -> None:
    write(db_url, tmp_path / "spool", [(TODAY, 1, 2.5)])
    sql = "SELECT fixture_id, price, max_stake, received_at FROM price_ticks"
    as_csv = warehouse("query", sql, "--format", "csv", "--database-url", db_url)
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["fixture_id", "price", "max_stake", "received_at"],
        ["F", "2.5", "1234567890.123456789012345678", at(TODAY, 1).isoformat()]]
    as_json = warehouse("query", sql, "--format", "json", "--database-url", db_url)
    assert json.loads(as_json.stdout) == [{"fixture_id": "F", "price": 2.5,
                                           "max_stake": "1234567890.123456789012345678",
                                           "received_at": at(TODAY, 1).isoformat()}]
    table = warehouse("query", "SELECT count(*) AS n FROM steam_moves(0.05, 2, INTERVAL '1 minute')",
                      "--database-url", db_url)
    assert table.returncode == 0 and "1 row" in table.stdout
    # SQL opening with a comment, as the README's do; lists (steam_moves' movers) as JSON, times ISO
    listed = "-- a comment first\nSELECT [max(received_at)] AS at, ['A', 'B'] AS books FROM price_ticks"
    for output, expected in (("csv", ["at,books", f'"[""{at(TODAY, 1).isoformat()}""]","[""A"", ""B""]"']),
                             ("json", [{"at": [at(TODAY, 1).isoformat()], "books": ["A", "B"]}])):
        result = warehouse("query", listed, "--format", output, "--database-url", db_url)
        assert result.returncode == 0, result.stderr
        got = result.stdout.splitlines() if output == "csv" else json.loads(result.stdout)
        assert got == expected
    bad = warehouse("query", "SELECT nope FROM price_ticks", "--database-url", db_url)
    assert bad.returncode == 2 and bad.stderr.startswith("error: the query failed:") and "nope" in bad.stderr
    assert "\n" not in bad.stderr.strip()
