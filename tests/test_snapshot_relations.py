"""Relations V2: snapshot rows never roll a price back, backfill stays out, steam names each mover
once — with exact answers on a scripted market, the same on PostgreSQL and on Parquet."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import duckdb
import pytest

from tests.conftest import query
from tests.exact import comparable
from warehouse import analysis, lake
from warehouse.config import WriterSettings
from warehouse.lifecycle import layout
from warehouse.lifecycle.export import export_day
from warehouse.records import ORIGIN_BACKFILL, ORIGIN_SNAPSHOT, PriceTick, RawMessage
from warehouse.store.writer import Writer

STREAM = UUID("0b7e7d3c-5f7c-4a8e-9d2f-444444444444")
REST = UUID("0b7e7d3c-5f7c-4a8e-9d2f-555555555555")
DAY = datetime.now(UTC).date() - timedelta(days=1)
T = datetime(DAY.year, DAY.month, DAY.day, 10, tzinfo=UTC)
S = timedelta(seconds=1)
SENT = T + 60 * S  # the resync's requests were sent then: its rows are dated then


def tick(when: datetime, book: str, price: float, ts: datetime | None, origin: str | None = None,
         fixture: str = "F1") -> PriceTick:
    return PriceTick(when, "oddspapi", book, fixture, "101", "101", price, player_id="0", source_ts=ts,
                     origin=origin)


def snap(book: str, price: float, ts: datetime | None) -> PriceTick:
    return tick(SENT, book, price, ts, ORIGIN_SNAPSHOT)


# (received_at, rest, records): one frame each. Bookmakers are the cases:
#   A  moved during the gap: the snapshot (vendor time inside the gap) is newer, and kept
#   B  the stream gave 3.20 before the request was sent; the REST answer is older (a cached answer):
#      its vendor time says so, and it is left out — kept, it would roll 3.20 back to 3.10
#   C  the race: the snapshot (4.40) is newer than what the stream had, but a pushed tick (4.80)
#      came after the request was sent: the pushed tick wins
#   D  no vendor time anywhere: the snapshot is dated when its request was sent, so the push
#      received after that (6.00) wins
#   E  the snapshot repeats the pushed state (same vendor time): it tells nothing new, left out
FRAMES: list[tuple[datetime, bool, list[PriceTick]]] = [
    (T, False, [tick(T, "A", 2.00, T - S)]),
    (T, False, [tick(T, "B", 3.00, T - S)]),
    (T, False, [tick(T, "C", 4.00, T - S)]),
    (T, False, [tick(T, "D", 5.00, None)]),
    (T, False, [tick(T, "E", 2.50, T + 5 * S)]),
    (T + 10 * S, False, [tick(T + 10 * S, "A", 1.90, T + 9 * S)]),
    (T + 50 * S, False, [tick(T + 50 * S, "B", 3.20, T + 49 * S)]),
    # the resync: one REST answer with every bookmaker, and the backfill of A's gap
    (SENT, True, [snap("A", 1.80, T + 40 * S), snap("B", 3.10, T + 30 * S), snap("C", 4.40, T + 45 * S),
                  snap("D", 5.50, None), snap("E", 2.50, T + 5 * S)]),
    (SENT, True, [tick(SENT, "A", 1.85, T + 20 * S, ORIGIN_BACKFILL),
                  tick(SENT, "A", 1.80, T + 40 * S, ORIGIN_BACKFILL)]),
    (T + 61 * S, False, [tick(T + 61 * S, "C", 4.80, T + 60.5 * S)]),
    (T + 62 * S, False, [tick(T + 62 * S, "D", 6.00, None)]),
    # F2: X moves three times within the minute, Y and Z once each
    (T, False, [tick(T, "X", 2.00, None, fixture="F2")]),
    (T, False, [tick(T, "Y", 2.00, None, fixture="F2")]),
    (T, False, [tick(T, "Z", 2.00, None, fixture="F2")]),
    (T + 10 * S, False, [tick(T + 10 * S, "X", 1.80, None, fixture="F2")]),
    (T + 15 * S, False, [tick(T + 15 * S, "X", 1.60, None, fixture="F2")]),
    (T + 20 * S, False, [tick(T + 20 * S, "Y", 1.80, None, fixture="F2")]),
    (T + 25 * S, False, [tick(T + 25 * S, "X", 1.40, None, fixture="F2")]),
    (T + 30 * S, False, [tick(T + 30 * S, "Z", 1.85, None, fixture="F2")]),
]


@pytest.fixture
def market(db_url: str, tmp_path: Path) -> str:
    async def main() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            for seq, (when, rest, records) in enumerate(FRAMES, 1):
                kind = "snapshot:/v4/odds" if rest else "price"
                await writer.put(RawMessage(when, "oddspapi", REST if rest else STREAM, seq, kind, b"{}"), records)

    asyncio.run(main())
    return db_url


def pg(url: str, sql: str, *params: object) -> list[tuple]:
    return query(url, sql, *params)


def as_of(url: str, when: datetime) -> dict[str, tuple]:
    rows = pg(url, "SELECT bookmaker, price, origin FROM prices_as_of(%s) WHERE fixture_id = 'F1'", when)
    return {book: (price, origin) for book, price, origin in rows}


def test_a_snapshot_heals_the_gap_but_never_rolls_a_newer_pushed_price_back(market: str) -> None:
    assert as_of(market, SENT - S) == {"A": (1.90, None), "B": (3.20, None), "C": (4.00, None),
                                       "D": (5.00, None), "E": (2.50, None)}
    assert as_of(market, SENT) == {"A": (1.80, "snapshot"), "B": (3.20, None), "C": (4.40, "snapshot"),
                                   "D": (5.50, "snapshot"), "E": (2.50, None)}
    assert as_of(market, T + 70 * S) == {"A": (1.80, "snapshot"), "B": (3.20, None), "C": (4.80, None),
                                         "D": (6.00, None), "E": (2.50, None)}
    # what V1 (the last row by our clock) would have said for B: the REST answer rolling 3.20 back
    stale = pg(market, "SELECT price FROM price_ticks WHERE bookmaker = 'B' ORDER BY received_at DESC, raw_id DESC"
                       " LIMIT 1")
    assert stale == [(3.10,)]


def test_price_history_shows_fresh_snapshots_as_observations_and_no_stale_or_backfill_rows(market: str) -> None:
    def history(book: str) -> list[tuple]:
        return pg(market, "SELECT received_at, price, prev_price, origin FROM price_history WHERE fixture_id = 'F1'"
                          " AND bookmaker = %s ORDER BY received_at, raw_id", book)

    assert history("A") == [(T, 2.00, None, None), (T + 10 * S, 1.90, 2.00, None), (SENT, 1.80, 1.90, "snapshot")]
    assert history("B") == [(T, 3.00, None, None), (T + 50 * S, 3.20, 3.00, None)]
    assert history("C") == [(T, 4.00, None, None), (SENT, 4.40, 4.00, "snapshot"), (T + 61 * S, 4.80, 4.40, None)]
    assert history("E") == [(T, 2.50, None, None)]
    left_out = pg(market, "SELECT count(*) FROM price_ticks WHERE fixture_id = 'F1'")[0][0] - pg(
        market, "SELECT count(*) FROM observed_ticks WHERE fixture_id = 'F1'")[0][0]
    assert left_out == 4  # B's and E's snapshot rows, A's two backfill rows
    assert pg(market, "SELECT count(*) FROM price_ticks WHERE origin = 'backfill'") == [(2,)]


def test_lines_candles_and_overround_follow_the_observed_ticks(market: str) -> None:
    lines = pg(market, "SELECT bookmaker, opening_price, ticks FROM opening_closing_lines WHERE fixture_id = 'F1'"
                       " ORDER BY bookmaker")
    assert lines == [("A", 2.00, 3), ("B", 3.00, 2), ("C", 4.00, 3), ("D", 5.00, 3), ("E", 2.50, 1)]
    candles = pg(market, "SELECT bookmaker, open, high, low, close, ticks FROM price_candles('1 hour')"
                         " WHERE fixture_id = 'F1' ORDER BY bookmaker")
    assert candles[1] == ("B", 3.00, 3.20, 3.00, 3.20, 2)
    assert candles[0] == ("A", 2.00, 2.00, 1.80, 1.80, 3)  # the backfill's 1.85 is no observation of ours
    overround = pg(market, "SELECT received_at, book_sum FROM market_overround WHERE bookmaker = 'B'"
                           " ORDER BY received_at")
    assert [(at, round(book, 9)) for at, book in overround] == [(T, round(1 / 3.0, 9)), (T + 50 * S, round(1 / 3.2, 9))]
    minute = pg(market, "SELECT bucket, bookmaker, close, ticks FROM price_candles('1 minute') ORDER BY 1, 2")
    assert minute == pg(market, "SELECT bucket, bookmaker, close, ticks FROM price_candles_1m ORDER BY 1, 2")


def test_steam_names_each_bookmaker_once_in_the_order_it_first_moved(market: str) -> None:
    rows = pg(market, "SELECT first_bookmaker, bookmakers, movers, movers_at, movers_from, movers_to, ended_at"
                      " FROM steam_moves(0.05, 3, '1 minute') WHERE fixture_id = 'F2'")
    assert rows == [("X", 3, ["X", "Y", "Z"], [T + 10 * S, T + 20 * S, T + 30 * S], [2.00, 2.00, 2.00],
                     [1.80, 1.80, 1.85], T + 30 * S)]


@pytest.mark.parametrize("sql", [
    "SELECT * FROM observed_ticks ORDER BY fixture_id, bookmaker, received_at, raw_id",
    "SELECT * FROM price_history ORDER BY fixture_id, bookmaker, received_at, raw_id",
    f"SELECT * FROM prices_as_of(TIMESTAMPTZ '{SENT.isoformat()}') ORDER BY fixture_id, bookmaker",
    "SELECT * FROM opening_closing_lines ORDER BY fixture_id, bookmaker",
    "SELECT * FROM price_candles(INTERVAL '1 minute') ORDER BY bucket, fixture_id, bookmaker",
    "SELECT * FROM market_overround ORDER BY received_at, raw_id, fixture_id, bookmaker",
    "SELECT * FROM steam_moves(0.05, 2, INTERVAL '1 minute') ORDER BY fixture_id, started_at",
])
def test_parquet_answers_exactly_like_postgresql(market: str, tmp_path: Path, sql: str) -> None:
    expected = [comparable(row) for row in pg(market, sql)]
    assert expected, "the scripted market must give rows for this query"
    export_day(market, tmp_path / "export", "price_ticks", DAY)
    got = analysis.connect(export_dir=tmp_path / "export").execute(sql).fetchall()
    assert [comparable(row) for row in got] == expected


def test_parquet_exported_before_the_origin_column_reads_as_pushed(tmp_path: Path) -> None:
    # A day exported by an earlier version has no `origin` column: its rows are pushed ones.
    file = layout.file(tmp_path, "price_ticks", DAY)
    file.parent.mkdir(parents=True)
    columns = [(name, kind) for name, kind in lake.columns("price_ticks") if name != "origin"]
    values = {"received_at": f"TIMESTAMPTZ '{T.isoformat()}'", "source": "'oddspapi'", "raw_id": "1",
              "bookmaker": "'A'", "fixture_id": "'F1'", "market_id": "'101'", "outcome_id": "'101'", "price": "2.0"}
    select = ", ".join(f"CAST({values.get(name, 'NULL')} AS {kind}) AS {name}" for name, kind in columns)
    duckdb.connect().execute(f"COPY (SELECT {select}) TO '{file}' (FORMAT parquet)")
    con = analysis.connect(export_dir=tmp_path)
    assert con.execute("SELECT bookmaker, price, origin FROM prices_as_of(now())").fetchall() == [("A", 2.0, None)]
