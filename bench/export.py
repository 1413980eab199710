"""Export benchmark: one day of price_ticks to Parquet, three ways, in one run.

    pip install -e '.[bench]'        # adbc-driver-postgresql and pyarrow, for the third way
    python bench/export.py           # 5,000,000 rows
    python bench/export.py --rows 1000000

  warehouse export   warehouse.export.parquet.export_day (DuckDB postgres extension → zstd Parquet,
                     sorted, counted, renamed into place, recorded in export_runs)
  COPY TO STDOUT     PostgreSQL's own single-stream COPY of the same rows, read and discarded
  ADBC → Parquet     adbc-driver-postgresql → Arrow → pyarrow.parquet (zstd), unsorted

Prints rows/s beside each other and the bytes per row of the Parquet file and of the PostgreSQL
partition (heap + indexes). Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import discard, scratch_server  # noqa: E402
from warehouse.export.parquet import export_day  # noqa: E402
from warehouse.store import migrate  # noqa: E402

# OddsPapi-like rows: 400 fixtures, 8 bookmakers, 4 markets, 3 outcomes, prices that walk.
FILL = """
INSERT INTO price_ticks (received_at, source, raw_id, source_ts, bookmaker, fixture_id, market_id, outcome_id,
                         player_id, price, active, max_stake, attrs)
SELECT %(day)s::timestamptz + (i * 86400.0 / %(rows)s) * interval '1 second',
       'oddspapi', i / 2,
       %(day)s::timestamptz + (i * 86400.0 / %(rows)s - 0.2) * interval '1 second',
       (ARRAY['pinnacle','bet365','stake','22bet','starcasino.be','betfair-ex','1xbet','sbobet'])[1 + i %% 8],
       'id10000' || lpad((i / 8 %% 400)::text, 4, '0') || '61624412',
       (ARRAY['101','104','1010','111'])[1 + (i / 3200) %% 4],
       ((ARRAY[101, 104, 1010, 111])[1 + (i / 3200) %% 4] + i %% 3)::text,
       '0', round((1.2 + 4 * abs(sin(i / 5000.0)) + (i %% 7) / 1000.0)::numeric, 3)::float8, true,
       CASE WHEN i %% 8 = 0 THEN 1000 END,
       jsonb_build_object('bookmakerOutcomeId', (i %% 100000)::text)
FROM generate_series(0, %(rows)s - 1) AS i
"""


def fill_price_day(url: str, rows: int) -> date:
    """Yesterday's partition (made ahead, as a running writer does) filled with `rows` FILL rows."""
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    print(f"filling {rows:,} rows …", file=sys.stderr)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT warehouse_ensure_partitions(%s, 1)", (day,))
        conn.execute(FILL, {"day": day.isoformat(), "rows": rows})
        conn.execute("VACUUM ANALYZE price_ticks")
    return day


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    workdir, server = scratch_server("export")
    url = server.url()
    migrate.upgrade(url)
    results: dict[str, float] = {}
    try:
        day = fill_price_day(url, args.rows)
        with psycopg.connect(url, autocommit=True) as conn:
            partition = f"price_ticks_p{day:%Y%m%d}"
            pg_bytes = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (partition,)).fetchone()[0]
            conn.execute("CHECKPOINT")

        print("warehouse export …", file=sys.stderr)
        started = time.perf_counter()
        exported = export_day(url, workdir / "exports", "price_ticks", day)
        results["warehouse export (DuckDB, sorted, checked)"] = exported.rows / (time.perf_counter() - started)
        parquet_bytes = (exported.path / "part-0.parquet").stat().st_size

        print("COPY TO STDOUT …", file=sys.stderr)
        started = time.perf_counter()
        with psycopg.connect(url) as conn, conn.cursor() as cursor:
            low, high = f"{day} 00:00+00", f"{day + timedelta(days=1)} 00:00+00"
            with cursor.copy(f"COPY (SELECT * FROM price_ticks WHERE received_at >= '{low}'"
                             f" AND received_at < '{high}') TO STDOUT") as copy:
                for _block in copy:
                    pass
        results["PostgreSQL COPY TO STDOUT (read, discarded)"] = args.rows / (time.perf_counter() - started)

        try:
            import adbc_driver_postgresql.dbapi as adbc
            import pyarrow.parquet as pq
        except ImportError:
            print("ADBC → Parquet skipped: pip install -e '.[bench]'", file=sys.stderr)
        else:
            print("ADBC → Arrow → Parquet …", file=sys.stderr)
            host = url.split("host=")[1]
            started = time.perf_counter()
            with adbc.connect(f"postgresql://postgres@/warehouse?host={host}") as conn, conn.cursor() as cursor:
                cursor.execute(f"SELECT * FROM price_ticks WHERE received_at >= '{low}' AND received_at < '{high}'")
                pq.write_table(cursor.fetch_arrow_table(), workdir / "adbc.parquet", compression="zstd")
            results["ADBC → Arrow → Parquet"] = args.rows / (time.perf_counter() - started)
    finally:
        discard(workdir, server)

    print(f"\n{args.rows:,} price_ticks rows of one day\n")
    print("| way | rows/s | vs COPY TO STDOUT |")
    print("|---|---:|---:|")
    copy_rate = results["PostgreSQL COPY TO STDOUT (read, discarded)"]
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / copy_rate:.2f}× |")
    print(f"\nbytes per row: Parquet {parquet_bytes / args.rows:.1f}, PostgreSQL partition {pg_bytes / args.rows:.1f}")


if __name__ == "__main__":
    main()
