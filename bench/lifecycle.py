"""Data lifecycle benchmark (issue 14): storage per row, a compressed lifetime, one query over hot and cold.

    python bench/lifecycle.py                    # all three, defaults (about 10 minutes on 2 cores)
    python bench/lifecycle.py --storage --rows 200000
    python bench/lifecycle.py --lifetime --surface --days 4 --day-rows 100000

  --storage   the same `--rows` price_ticks rows and half as many raw frames (bench/export.py's
              OddsPapi-like generator: two prices per frame, ~350-byte payloads) of one day in
              plain PostgreSQL 18 (the wheel's), in TimescaleDB on Debian's PostgreSQL 15 after
              `compress_chunk` of the day's chunks (skipped, with a line saying so, when PostgreSQL 15
              or TimescaleDB is not installed), and in the Parquet export: bytes per price row and per
              raw frame. PostgreSQL: pg_total_relation_size of the day's partitions (heap, TOAST,
              indexes); TimescaleDB: chunks_detailed_size of the day's chunks (what retention counts),
              beside chunk_compression_stats' before/after; Parquet: the exported files.
  --lifetime  `--days` simulated UTC days of `--day-rows` price rows (and their raw frames) each, ending
              yesterday; after each day, what a nightly cron runs: `warehouse export` (every pending
              table-day, warehouse.lifecycle.export.export_all) and `warehouse retain --keep-days N` as run
              at the end of that day (warehouse.lifecycle.retention: candidate_days, verify, drop — the
              command's loop, with the simulated day as "today"). Prints PostgreSQL's database size
              (flat once N days are held), the lake's size (grows by a day each day) and the time per
              retained table-day.
  --surface   after the lifetime (N hot days in PostgreSQL, the rest only in Parquet), times a
              fixture/market line movement over the whole span (relations.LINE_MOVEMENT, what
              `warehouse plot` draws, and the same read straight from price_ticks), the board
              `prices_as_of` a cold time,
              and a count per day over every day, each on the query surface
              (warehouse.analysis.connect(url, export_dir)), on PostgreSQL alone (the hot days) and on
              the Parquet of the cold days alone (warehouse.analysis.connect(export_dir=…)); medians of
              `--repeat` runs after a warm-up, until the rows are in Python (psycopg binary rows; DuckDB
              Arrow tables). Checks that the surface's rows are the hot rows plus the cold rows.
              Implies --lifetime.

With no flag, all three. Everything runs in scratch servers and folders deleted at the end.
Not a test: figures depend on the machine (compare ratios within one run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from bench.export import fill_price_day, fill_raw_frames  # noqa: E402
from warehouse import analysis  # noqa: E402
from warehouse.analysis.relations import LINE_MOVEMENT  # noqa: E402
from warehouse.lake import EXPORT_TABLES  # noqa: E402
from warehouse.lifecycle import layout, retention  # noqa: E402
from warehouse.lifecycle.days import days_held  # noqa: E402
from warehouse.lifecycle.export import export_all, export_day  # noqa: E402
from warehouse.lifecycle.pending import pending  # noqa: E402
from warehouse.store import migrate  # noqa: E402

PG15_BINARIES = Path("/usr/lib/postgresql/15/bin")  # where Debian's postgresql-15 puts them (as tests/conftest.py)
TIMESCALEDB_CONTROL = Path("/usr/share/postgresql/15/extension/timescaledb.control")
TIMESCALEDB_SETTINGS = {
    "shared_preload_libraries": "'timescaledb'",
    "timescaledb.telemetry_level": "off",  # no network
    "timescaledb.max_background_workers": "0",  # nothing compresses behind the benchmark's back
}
TABLES = ("price_ticks", "raw_messages")
MB = 2**20


def scalar(url: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def parquet_bytes(root: Path) -> int:
    """The lake's size: every exported file (not the export's own work folder)."""
    return sum(f.stat().st_size for table in EXPORT_TABLES for f in layout.files(root, table))


def fill_day(url: str, day: date, rows: int) -> None:
    fill_price_day(url, rows, day)
    fill_raw_frames(url, day, rows)


# -- storage ----------------------------------------------------------------------------------


def storage(admin_url: str, workdir: Path, rows: int) -> dict[str, dict[str, int]]:
    """Bytes of the day's price rows and raw frames per store."""
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    sizes: dict[str, dict[str, int]] = {}
    url = create_database(admin_url, "lifecycle_storage")
    migrate.upgrade(url)
    print("storage: plain PostgreSQL 18 …", file=sys.stderr)
    fill_day(url, day, rows)
    sizes["PostgreSQL 18, plain (partition: heap + TOAST + indexes)"] = {
        table: int(scalar(url, "SELECT pg_total_relation_size(%s::regclass)", f"{table}_p{day:%Y%m%d}"))
        for table in TABLES}
    export_root = workdir / "storage-export"
    for table in TABLES:
        export_day(url, export_root, table, day)
    parquet_sizes = {table: layout.file(export_root, table, day).stat().st_size for table in TABLES}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE lifecycle_storage WITH (FORCE)")
    sizes.update(timescaledb(day, rows))
    sizes["Parquet (zstd, the export)"] = parquet_sizes
    return sizes


def timescaledb(day: date, rows: int) -> dict[str, dict[str, int]]:
    """The same rows in TimescaleDB's 1-day chunks: before and after compress_chunk."""
    for needed, remedy in ((PG15_BINARIES / "postgres", "apt-get install -y postgresql-15"),
                           (TIMESCALEDB_CONTROL, "../shared/timescaledb/install.sh as root")):
        if not needed.exists():
            print(f"TimescaleDB column skipped: {needed} not found ({remedy})")
            return {}
    print("storage: TimescaleDB on PostgreSQL 15 …", file=sys.stderr)
    workdir, server = scratch_server("lifecycle-tsdb", PG15_BINARIES, TIMESCALEDB_SETTINGS)
    try:
        url = server.url()
        migrate.upgrade(url)
        layout = scalar(url, "SELECT value FROM warehouse_meta WHERE key = 'storage'")
        if layout != "timescaledb":
            print(f"TimescaleDB column skipped: the migrations chose storage {layout!r} on PostgreSQL 15")
            return {}
        fill_day(url, day, rows)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        chunk_of = ("SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks"
                    " WHERE hypertable_name = %s AND range_start = %s")
        detailed = ("SELECT coalesce(sum(total_bytes), 0) FROM chunks_detailed_size(%s::regclass)"
                    " WHERE format('%%I.%%I', chunk_schema, chunk_name) = %s")
        chunks = {table: scalar(url, chunk_of, table, start) for table in TABLES}
        before = {table: int(scalar(url, detailed, table, chunks[table])) for table in TABLES}
        print("storage: compress_chunk …", file=sys.stderr)
        with psycopg.connect(url, autocommit=True) as conn:
            for chunk in chunks.values():
                conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
        after = {table: int(scalar(url, detailed, table, chunks[table])) for table in TABLES}
        stats = {table: scalar(url, "SELECT array[before_compression_total_bytes, after_compression_total_bytes]"
                                    " FROM chunk_compression_stats(%s::regclass)"
                                    " WHERE format('%%I.%%I', chunk_schema, chunk_name) = %s", table, chunks[table])
                 for table in TABLES}
        version = scalar(url, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    finally:
        discard(workdir, server)
    return {
        f"TimescaleDB {version} on PostgreSQL 15, uncompressed chunk (chunks_detailed_size)": before,
        f"TimescaleDB {version}, compressed chunk (chunks_detailed_size)": after,
        f"TimescaleDB {version}, compressed (chunk_compression_stats after)": {t: int(stats[t][1]) for t in TABLES},
    }


def print_storage(sizes: dict[str, dict[str, int]], rows: int) -> None:
    frames = rows // 2
    plain = next(iter(sizes.values()))
    print(f"\n## Storage: {rows:,} price_ticks rows and {frames:,} raw frames of one day\n")
    print("| store | bytes per price row | vs plain PostgreSQL | bytes per raw frame | vs plain PostgreSQL |")
    print("|---|---:|---:|---:|---:|")
    for name, size in sizes.items():
        price, raw = size["price_ticks"] / rows, size["raw_messages"] / frames
        print(f"| {name} | {price:.1f} | {size['price_ticks'] / plain['price_ticks']:.3f}× | {raw:.1f} |"
              f" {size['raw_messages'] / plain['raw_messages']:.3f}× |")


# -- lifetime ---------------------------------------------------------------------------------


@dataclass
class Night:
    day: date
    fill_s: float
    exported: int  # table-days
    export_s: float
    dropped: int  # table-days
    retain_s: float
    kept: list[str]  # days retention kept, with the reason
    database_bytes: int
    hot_days: int
    lake_bytes: int
    lake_days: int


def retain(url: str, keep_days: int, today: date, lake: Path) -> tuple[int, list[str]]:
    """`warehouse retain --keep-days N` as run on `today`: table-days dropped, days kept and why."""
    dropped, kept = 0, []
    for outcome in retention.retain(url, keep_days, lake, today=today):
        if outcome.refused is not None:
            raise outcome.refused
        if outcome.dropped:
            dropped += len(outcome.verdict.tables)
        else:
            kept.append(f"{outcome.verdict.day}: {outcome.verdict.problem}")
    return dropped, kept


def lifetime(admin_url: str, workdir: Path, days: int, rows: int, keep_days: int) -> tuple[str, Path, list[Night]]:
    url = create_database(admin_url, "lifecycle")
    migrate.upgrade(url)
    root = workdir / "lake"
    first = datetime.now(UTC).date() - timedelta(days=days)
    nights = []
    for n in range(days):
        day = first + timedelta(days=n)
        print(f"lifetime: day {n + 1}/{days} ({day}) …", file=sys.stderr)
        started = time.perf_counter()
        fill_day(url, day, rows)
        filled = time.perf_counter()
        work = pending(url, EXPORT_TABLES, until=day)  # the night after `day`: days up to it are complete
        export_all(url, root, work)
        exported = time.perf_counter()
        dropped, kept = retain(url, keep_days, day, root)
        retained = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            database = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
            hot = sum(1 for held in days_held(conn) if held <= day)  # not the partitions made ahead
        nights.append(Night(day, filled - started, len(work), exported - filled, dropped, retained - exported, kept,
                            database, hot, parquet_bytes(root),
                            len(layout.files(root, "price_ticks"))))
    return url, root, nights


def print_lifetime(nights: list[Night], rows: int, keep_days: int) -> None:
    print(f"\n## Lifetime: {len(nights)} days of {rows:,} price rows + {rows // 2:,} raw frames,"
          f" export and retain --keep-days {keep_days} after each\n")
    print("| day | fill s | export: table-days | s | retain: table-days dropped | s | ms per table-day"
          " | PostgreSQL database MB | days in PostgreSQL | Parquet lake MB | days in Parquet |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, night in enumerate(nights, 1):
        per = f"{night.retain_s * 1000 / night.dropped:.0f}" if night.dropped else "–"
        print(f"| {n} ({night.day}) | {night.fill_s:.1f} | {night.exported} | {night.export_s:.1f} | {night.dropped}"
              f" | {night.retain_s:.2f} | {per} | {night.database_bytes / MB:.1f} | {night.hot_days}"
              f" | {night.lake_bytes / MB:.1f} | {night.lake_days} |")
        for line in night.kept:
            print(f"  kept {line}")
    dropping = [n for n in nights if n.dropped]
    if dropping:
        total = sum(n.dropped for n in dropping)
        print(f"\nretention: {total} table-days dropped in {sum(n.retain_s for n in dropping):.2f} s,"
              f" {sum(n.retain_s for n in dropping) * 1000 / total:.0f} ms per table-day"
              f" (verify: count, file, sha256; then warehouse_drop_day)")
    steady = [n.database_bytes for n in nights[keep_days:]]
    if steady:
        print(f"PostgreSQL once {keep_days} days are held: {min(steady) / MB:.1f}–{max(steady) / MB:.1f} MB;"
              f" lake grows {(nights[-1].lake_bytes - nights[0].lake_bytes) / (len(nights) - 1) / MB:.1f} MB/day"
              if len(nights) > 1 else "")


# -- surface ----------------------------------------------------------------------------------


def cold_only(url: str, root: Path, workdir: Path) -> Path:
    """A folder of the days retention moved to Parquet only (links to the lake's day folders), so that
    `analysis.connect(export_dir=…)` reads the cold days alone."""
    cold = workdir / "cold"
    for table, days in retention.retained_files(url).items():
        for day, _ in days:
            link = layout.file(cold, table, day).parent
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(layout.file(root, table, day).parent, target_is_directory=True)
    return cold


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def surface(url: str, root: Path, workdir: Path, nights: list[Night], repeat: int) -> None:
    cold_dir = cold_only(url, root, workdir)
    hot_from = min(retention.candidate_days(url, date.max))
    cold_days = [day for path in layout.files(cold_dir, "price_ticks") if (day := layout.day_of(path))]
    if not cold_days:
        print("\nsurface skipped: no day was retained (give more --days than --keep-days)")
        return
    as_of = datetime.combine(cold_days[-1], datetime.min.time(), UTC) + timedelta(hours=12)
    fixture, market = "id10000012361624412", "101"
    queries = {
        "line movement of one fixture/market, whole span": (LINE_MOVEMENT, (fixture, market)),
        # the same straight from price_ticks, not through observed_ticks (whose snapshot branch DuckDB
        # decorrelates into a scan of every hot row: see docs/performance.md)
        "the same from price_ticks": (LINE_MOVEMENT.replace("FROM observed_ticks", "FROM price_ticks"),
                                      (fixture, market)),
        f"prices_as_of({as_of:%Y-%m-%d %H:%M}), every selection": (
            f"SELECT * FROM prices_as_of(TIMESTAMPTZ '{as_of.isoformat()}')", ()),
        "count per day, every day": ("SELECT CAST(received_at AT TIME ZONE 'UTC' AS date) AS day, count(*) AS n"
                                     " FROM price_ticks GROUP BY 1 ORDER BY 1", ()),
    }
    print("surface: querying …", file=sys.stderr)
    both = analysis.connect(url, root)
    cold = analysis.connect(export_dir=cold_dir)
    results: list[tuple[str, float, float, float, int, int, int, str]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for name, (sql, params) in queries.items():
            duck = sql.replace("%s", "?")

            def on_pg(sql: str = sql, params: tuple[str, ...] = params) -> list[tuple[Any, ...]]:
                return conn.cursor(binary=True).execute(sql, params).fetchall()

            def on_duck(con: Any, sql: str = duck, params: tuple[str, ...] = params) -> Callable[[], Any]:
                return lambda: con.execute(sql, list(params)).to_arrow_table()

            times = (median_ms(on_duck(both), repeat), median_ms(on_pg, repeat), median_ms(on_duck(cold), repeat))
            rows_both = both.execute(duck, list(params)).fetchall()
            rows_hot, rows_cold = on_pg(), cold.execute(duck, list(params)).fetchall()
            if name.startswith("prices_as_of"):  # no order: the same set of selections
                same = sorted(map(repr, rows_both)) == sorted(map(repr, rows_cold)) and not rows_hot
            else:  # ordered by time, and the cold days come first
                same = rows_both == [tuple(r) for r in rows_cold] + [tuple(r) for r in rows_hot]
            results.append((name, *times, len(rows_both), len(rows_hot), len(rows_cold), "yes" if same else "NO"))
    hot_days = sum(1 for n in nights if n.day >= hot_from)
    print(f"\n## One query over hot and cold: {hot_days} days in PostgreSQL, {len(cold_days)} only in Parquet"
          f" (median of {repeat} after a warm-up)\n")
    print("| query | surface ms | PostgreSQL alone (hot) ms | Parquet alone (cold) ms | surface / (PG + Parquet)"
          " | rows: surface | hot | cold | surface = cold + hot |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, t_both, t_hot, t_cold, n_both, n_hot, n_cold, agree in results:
        print(f"| {name} | {t_both:.1f} | {t_hot:.1f} | {t_cold:.1f} | {t_both / (t_hot + t_cold):.2f}× | {n_both:,}"
              f" | {n_hot:,} | {n_cold:,} | {agree} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", action="store_true", help="bytes per row: PostgreSQL, TimescaleDB, Parquet")
    parser.add_argument("--lifetime", action="store_true", help="days written, exported and retained")
    parser.add_argument("--surface", action="store_true", help="one query over hot and cold (runs the lifetime)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="price rows of the storage day")
    parser.add_argument("--days", type=int, default=6, help="days of the lifetime")
    parser.add_argument("--day-rows", type=int, default=300_000, help="price rows per lifetime day")
    parser.add_argument("--keep-days", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each query (after a warm-up)")
    args = parser.parse_args()
    everything = not (args.storage or args.lifetime or args.surface)
    workdir, server = scratch_server("lifecycle")
    admin_url = server.url()
    started = time.perf_counter()
    try:
        if args.storage or everything:
            sizes = storage(admin_url, workdir, args.rows)
            print_storage(sizes, args.rows)
        if args.lifetime or args.surface or everything:
            url, root, nights = lifetime(admin_url, workdir, args.days, args.day_rows, args.keep_days)
            print_lifetime(nights, args.day_rows, args.keep_days)
            if args.surface or everything:
                surface(url, root, workdir, nights, args.repeat)
    finally:
        discard(workdir, server)
    print(f"\n({datetime.now(UTC):%Y-%m-%d}, {time.perf_counter() - started:.0f} s in all, measured beside other work"
          " on a shared 2-core machine: compare ratios, not absolutes)")


if __name__ == "__main__":
    main()
