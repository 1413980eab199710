"""Export benchmark: one day of price_ticks (and its raw frames) to Parquet, several ways, in one run.

    pip install -e '.[bench]'        # adbc-driver-postgresql and pyarrow, for the ADBC way
    python bench/export.py           # 5,000,000 price rows, 2,500,000 raw frames
    python bench/export.py --rows 1000000 --repeat 3

  warehouse export     warehouse.lifecycle.export.export_day: PostgreSQL sends the day's rows in the
                       lake's types (numerics as exact decimals) → DuckDB sorts → zstd Parquet,
                       counted and checked, renamed into place, recorded in export_runs
  previous export      the export before the exact-decimal contract (DuckDB's postgres scan of the
                       day's partition, numerics through DOUBLE), as it ran: COPY, count, sha256
  COPY TO STDOUT       PostgreSQL's own single-stream COPY of the same rows, read and discarded
  ADBC → Parquet       adbc-driver-postgresql → Arrow → pyarrow.parquet (zstd), unsorted

Each way runs `--repeat` times, interleaved, and the best run counts (the machine may be shared).
Prints rows/s beside each other, each as a ratio to COPY TO STDOUT, and the bytes per price row
and per raw frame in PostgreSQL (the day's partition: heap + TOAST + indexes) and in Parquet.
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import discard, scratch_server  # noqa: E402
from warehouse import schema  # noqa: E402
from warehouse.lifecycle import layout  # noqa: E402
from warehouse.lifecycle.export import export_day  # noqa: E402
from warehouse.store import migrate  # noqa: E402
from warehouse.store.duckdb import duckdb_connection  # noqa: E402

# OddsPapi-like rows: 400 fixtures, 8 bookmakers, 4 markets (one of them a handicap with a line),
# 3 outcomes, prices that walk, a limit on every 8th row; two rows per raw frame.
FILL = """
INSERT INTO price_ticks (received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
                         player_id, line, price, active, max_stake, attrs)
SELECT %(day)s::timestamptz + (i * 86400.0 / %(rows)s) * interval '1 second',
       'oddspapi', i / 2,
       %(day)s::timestamptz + (i * 86400.0 / %(rows)s - 0.2) * interval '1 second',
       (ARRAY['pinnacle','bet365','stake','22bet','starcasino.be','betfair-ex','1xbet','sbobet'])[1 + i %% 8],
       'id10000' || lpad((i / 8 %% 400)::text, 4, '0') || '61624412',
       (ARRAY['101','104','1010','111'])[1 + (i / 3200) %% 4],
       ((ARRAY[101, 104, 1010, 111])[1 + (i / 3200) %% 4] + i %% 3)::text,
       '0', CASE WHEN (i / 3200) %% 4 = 2 THEN (ARRAY[-0.25, 0.5, 2.5, -1.75])[1 + i %% 4] END,
       round((1.2 + 4 * abs(sin(i / 5000.0)) + (i %% 7) / 1000.0)::numeric, 3)::float8, true,
       CASE WHEN i %% 8 = 0 THEN 1000 + i %% 1000 * 0.5 END,
       jsonb_build_object('bookmakerOutcomeId', (i %% 100000)::text)
FROM generate_series(0, %(rows)s - 1) AS i
"""
# The raw frames those rows came from, as an OddsPapi price update reads (about 400 bytes each).
FILL_RAW = """
INSERT INTO raw_messages (received_at, source, id, connection_id, seq, kind, payload)
SELECT %(day)s::timestamptz + (f * 2 * 86400.0 / %(rows)s) * interval '1 second', 'oddspapi', f,
       'b9f5f0f4-2d42-4a8a-8f7e-1f0c2d3e4a5b', f, 'price',
       format('{"fixtureId": "id10000%%s61624412", "bookmakerOdds": {"%%s": {"markets": {"%%s": {"outcomes": {"%%s":'
              ' {"players": {"0": {"active": true, "betslip": null, "bookmakerOutcomeId": "%%s", "changedAt":'
              ' "%%s", "limit": null, "playerName": null, "price": %%s, "exchangeMeta": {}, "playerId": 0}}}}}}}}}',
              lpad((f / 4 %% 400)::text, 4, '0'), (ARRAY['pinnacle','bet365','stake','22bet'])[1 + f %% 4],
              (ARRAY['101','104','1010','111'])[1 + (f / 1600) %% 4], 101 + f %% 3, f %% 100000,
              to_char(%(day)s::timestamptz + (f * 2 * 86400.0 / %(rows)s) * interval '1 second',
                      'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
              round((1.2 + 4 * abs(sin(f / 2500.0)))::numeric, 3))::json
FROM generate_series(0, %(rows)s / 2 - 1) AS f
"""


def fill_price_day(url: str, rows: int, day: date | None = None) -> date:
    """`day`'s partition (default yesterday; made ahead, as a running writer does) filled with `rows`
    FILL rows."""
    day = day or (datetime.now(UTC) - timedelta(days=1)).date()
    print(f"filling {rows:,} price rows …", file=sys.stderr)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT warehouse_ensure_partitions(%s, 1)", (day,))
        conn.execute(FILL, {"day": day.isoformat(), "rows": rows})
        conn.execute("VACUUM ANALYZE price_ticks")
    return day


def fill_raw_frames(url: str, day: date, rows: int) -> None:
    """The raw frames of `rows` FILL rows of `day`: half as many."""
    print(f"filling {rows // 2:,} raw frames …", file=sys.stderr)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL_RAW, {"day": day.isoformat(), "rows": rows})
        conn.execute("VACUUM ANALYZE raw_messages")
        conn.execute("CHECKPOINT")


def previous_export(url: str, path: Path, table: str, day: date) -> int:
    """The export as it was before the exact-decimal contract, minus its folder swap and record:
    DuckDB's postgres scan of the day's partition (in parallel by ctid), numerics read as DOUBLE and
    cast to DECIMAL(38, 12), jsonb as JSON, then PostgreSQL's count and the file's sha256."""
    columns = []
    for column in schema.metadata.tables[table].columns:
        kind = type(column.type).__name__
        columns.append(f"CAST({column.name} AS DECIMAL(38, 12)) AS {column.name}" if kind == "Numeric"
                       else f"CAST({column.name} AS JSON) AS {column.name}" if kind in ("JSON", "JSONB")
                       else column.name)
    con = duckdb_connection(url)
    try:
        (written,) = con.execute(
            f"COPY (SELECT * FROM (SELECT {', '.join(columns)} FROM pg.public.{table}_p{day:%Y%m%d})"
            f" ORDER BY {schema.SORT_KEYS[table]}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)").fetchone()
    finally:
        con.close()
    with psycopg.connect(url, autocommit=True) as conn:
        low, high = f"{day} 00:00+00", f"{day + timedelta(days=1)} 00:00+00"
        conn.execute(f"SELECT count(*) FROM {table} WHERE received_at >= %s AND received_at < %s", (low, high))
    hashlib.sha256(path.read_bytes()).hexdigest()
    return int(written)


def copy_to_stdout(url: str, table: str, day: date) -> None:
    low, high = f"{day} 00:00+00", f"{day + timedelta(days=1)} 00:00+00"
    sql = f"COPY (SELECT * FROM {table} WHERE received_at >= '{low}' AND received_at < '{high}') TO STDOUT"
    with psycopg.connect(url) as conn, conn.cursor() as cursor, cursor.copy(sql) as copy:
        for _block in copy:
            pass


def adbc_export(url: str, path: Path, table: str, day: date) -> None:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.parquet as pq

    low, high = f"{day} 00:00+00", f"{day + timedelta(days=1)} 00:00+00"
    host = url.split("host=")[1]
    with adbc.connect(f"postgresql://postgres@/warehouse?host={host}") as conn, conn.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE received_at >= '{low}' AND received_at < '{high}'")
        pq.write_table(cursor.fetch_arrow_table(), path, compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each way, interleaved; the best counts")
    args = parser.parse_args()
    workdir, server = scratch_server("export")
    url = server.url()
    migrate.upgrade(url)
    table = "price_ticks"
    ways: dict[str, Callable[[], object]] = {}
    best: dict[str, float] = {}
    sizes: dict[str, tuple[int, int, int]] = {}  # table -> (PostgreSQL bytes, Parquet bytes, rows)
    try:
        day = fill_price_day(url, args.rows)
        fill_raw_frames(url, day, args.rows)
        ways["warehouse export (exact decimals, checked)"] = lambda: export_day(url, workdir / "x", table, day)
        ways["previous export (numerics through DOUBLE)"] = lambda: previous_export(
            url, workdir / "previous.parquet", table, day)
        ways["PostgreSQL COPY TO STDOUT (read, discarded)"] = lambda: copy_to_stdout(url, table, day)
        try:
            import adbc_driver_postgresql.dbapi  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            print("ADBC → Parquet skipped: pip install -e '.[bench]'", file=sys.stderr)
        else:
            ways["ADBC → Arrow → Parquet (unsorted)"] = lambda: adbc_export(url, workdir / "adbc.parquet", table, day)
        for run in range(args.repeat):
            for name, way in ways.items():
                print(f"{name} ({run + 1}/{args.repeat}) …", file=sys.stderr)
                started = time.perf_counter()
                way()
                best[name] = max(best.get(name, 0.0), args.rows / (time.perf_counter() - started))

        exported = export_day(url, workdir / "x", "raw_messages", day)
        with psycopg.connect(url, autocommit=True) as conn:
            for name, rows in ((table, args.rows), ("raw_messages", exported.rows)):
                (pg_bytes,) = conn.execute("SELECT pg_total_relation_size(%s::regclass)",
                                           (f"{name}_p{day:%Y%m%d}",)).fetchone() or (0,)
                parquet = layout.file(workdir / "x", name, day)
                sizes[name] = (pg_bytes, parquet.stat().st_size, rows)
    finally:
        discard(workdir, server)

    print(f"\n{args.rows:,} price_ticks rows of one day (best of {args.repeat})\n")
    print("| way | rows/s | vs COPY TO STDOUT |")
    print("|---|---:|---:|")
    copy_rate = best["PostgreSQL COPY TO STDOUT (read, discarded)"]
    for name, rate in best.items():
        print(f"| {name} | {rate:,.0f} | {rate / copy_rate:.2f}× |")
    now, before = best["warehouse export (exact decimals, checked)"], best["previous export (numerics through DOUBLE)"]
    print(f"\nwarehouse export / previous export: {now / before:.2f}×")
    print("\n| bytes per | PostgreSQL (heap + TOAST + indexes) | Parquet |")
    print("|---|---:|---:|")
    for name, label in ((table, "price row"), ("raw_messages", "raw frame")):
        pg_bytes, parquet_bytes, rows = sizes[name]
        print(f"| {label} ({rows:,}) | {pg_bytes / rows:.1f} | {parquet_bytes / rows:.1f} |")


if __name__ == "__main__":
    main()
