"""Query benchmark: the line movement of one fixture/market on a 10,000,000-row price_ticks.

    python bench/query.py               # 10,000,000 rows (about 3 minutes to fill and export)
    python bench/query.py --rows 1000000

Fills one day of OddsPapi-like ticks (bench/export.py's generator: 400 fixtures × 4 markets × 3
outcomes × 8 bookmakers, time-ordered as a collector writes them, so one market's ticks are spread
over the whole day), exports it with `warehouse export`, then times, on warm caches, over fixtures
and markets picked at random:

  line movement    relations.LINE_MOVEMENT: every price of the market, what `warehouse plot` draws
  price_history    the same prices with the previous price, the move and the implied probability
  every column     SELECT * FROM price_ticks for the fixture/market: the table as stored (baseline)

on PostgreSQL and on the Parquet (DuckDB, warehouse.analysis.connect(export_dir=…)), each time until the rows are
in Python: psycopg with binary results, DuckDB as an Arrow table (what `.df()` builds on); plus the
server's own execution time of the line movement (EXPLAIN ANALYZE), which leaves out the client.
Prints median and p90 milliseconds.

`--surface`: the hot-day goal of issue 28. The same day left in PostgreSQL (not exported), one
fixture's line movement, `price_history` (one market) and `prices_as_of(noon)` (every market), each
timed in PostgreSQL alone (psycopg) and on the query surface (`warehouse.analysis.connect(url)`),
side by side with their ratio: as DuckDB plans the SQL as written (`as written`: the scan hands
PostgreSQL `fixture_id = '…' COLLATE "C"`, which its index cannot serve) and as the product runs it
(`Engine.rows`, through `statement.indexable`). Checks that the surface's rows are PostgreSQL's.

    python bench/query.py --surface --rows 1000000 --queries 9

Then (`--relations`, the default; bench/trading.py) each trading relation of migration 0009 on the same
day in PostgreSQL and on the query surface (`warehouse.analysis.connect(url)`: DuckDB reading the hot
day through the postgres scan): one fixture (median of `--fixtures` fixtures, rows in Python) and, with
`--whole-day`, the whole day once (each stopped after `--timeout` seconds).

    python bench/query.py --no-baseline --fixtures 5 --whole-day

Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import discard, scratch_server  # noqa: E402
from bench.export import fill_price_day  # noqa: E402
from bench.trading import fill_desk, measure  # noqa: E402
from warehouse import analysis  # noqa: E402
from warehouse.analysis.engine import Engine  # noqa: E402
from warehouse.analysis.relations import LINE_MOVEMENT  # noqa: E402
from warehouse.lifecycle.export import export_day  # noqa: E402
from warehouse.store import migrate  # noqa: E402

HISTORY = ("SELECT * FROM price_history WHERE fixture_id = %s AND market_id = %s ORDER BY received_at, raw_id")
EVERY_COLUMN = "SELECT * FROM price_ticks WHERE fixture_id = %s AND market_id = %s ORDER BY received_at, raw_id"

MARKETS = ("101", "104", "1010", "111")


def timed(run: Callable[[str, str], int], targets: list[tuple[str, str]]) -> tuple[float, float, int]:
    """Median and p90 milliseconds over `targets` (after a warm-up pass), and the rows of the last."""
    for fixture, market in targets[:5]:
        run(fixture, market)
    times, rows = [], 0
    for fixture, market in targets:
        started = time.perf_counter()
        rows = run(fixture, market)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)], rows


def interleaved(ways: tuple[Callable[[str, str], object], ...], targets: list[tuple[str, str]]) -> list[float]:
    """Median milliseconds of each way over `targets`, the ways taking turns on each target (after a
    warm-up pass), so that a change in the machine's load falls on all of them alike."""
    for fixture, market in targets[:3]:
        for way in ways:
            way(fixture, market)
    times: list[list[float]] = [[] for _ in ways]
    for fixture, market in targets:
        for n, way in enumerate(ways):
            started = time.perf_counter()
            way(fixture, market)
            times[n].append((time.perf_counter() - started) * 1000)
    return [statistics.median(each) for each in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="the line movement lookups on PostgreSQL and Parquet")
    parser.add_argument("--relations", action=argparse.BooleanOptionalAction, default=True,
                        help="the trading relations on PostgreSQL and the query surface")
    parser.add_argument("--fixtures", type=int, default=5, help="fixtures each relation is timed on")
    parser.add_argument("--whole-day", action=argparse.BooleanOptionalAction, default=False,
                        help="also each relation over the whole day, once")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a whole-day query may take")
    parser.add_argument("--surface", action="store_true",
                        help="only the hot-day goal: one fixture on PostgreSQL alone and on the query surface")
    args = parser.parse_args()
    if args.surface:
        hot_day(args.rows, args.queries)
        return
    workdir, server = scratch_server("query")
    url = server.url()
    migrate.upgrade(url)
    rng = random.Random(7)
    targets = [(f"id10000{rng.randrange(400):04d}61624412", rng.choice(MARKETS)) for _ in range(args.queries)]
    results: dict[str, tuple[float, float, int]] = {}
    trading: list[tuple[str, str, float | None, int, float | None, int]] = []
    try:
        day = fill_price_day(url, args.rows)
        if args.relations:
            fill_desk(url, day)
            surface = analysis.connect(url)
            surface.execute("SET memory_limit = '6GB'")  # a shared machine: spill rather than take it all
            surface.execute(f"SET temp_directory = '{workdir / 'duckdb-spill'}'")
            fixtures = [f"id10000{rng.randrange(400):04d}61624412" for _ in range(args.fixtures)]
            trading = measure(url, surface, day, fixtures, args.whole_day, args.timeout)
        if not args.baseline:
            return
        print("exporting …", file=sys.stderr)
        export_day(url, workdir / "exports", "price_ticks", day)

        print("querying PostgreSQL …", file=sys.stderr)
        with psycopg.connect(url, autocommit=True) as conn:
            def on_postgres(sql: str) -> Callable[[str, str], int]:
                return lambda fixture, market: len(conn.cursor(binary=True).execute(sql, (fixture, market)).fetchall())

            def server_side(fixture: str, market: str) -> int:
                plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + LINE_MOVEMENT, (fixture, market)).fetchone()[0]
                server_ms.append(plan[0]["Execution Time"])
                return plan[0]["Plan"]["Actual Rows"]

            server_ms: list[float] = []
            timed(server_side, targets)
            measured = sorted(server_ms[5:])  # after the warm-up pass
            results["PostgreSQL line movement, server only"] = (
                statistics.median(measured), measured[int(len(measured) * 0.9)], 0)

            results["PostgreSQL line movement"] = timed(on_postgres(LINE_MOVEMENT), targets)
            results["PostgreSQL price_history"] = timed(on_postgres(HISTORY), targets)
            results["PostgreSQL every column"] = timed(on_postgres(EVERY_COLUMN), targets)

        print("querying Parquet …", file=sys.stderr)
        con = analysis.connect(export_dir=workdir / "exports")

        def on_parquet(sql: str) -> Callable[[str, str], int]:
            sql = sql.replace("%s", "?")
            return lambda fixture, market: con.execute(sql, [fixture, market]).to_arrow_table().num_rows

        results["Parquet (DuckDB) line movement"] = timed(on_parquet(LINE_MOVEMENT), targets)
        results["Parquet (DuckDB) price_history"] = timed(on_parquet(HISTORY), targets)
        results["Parquet (DuckDB) every column"] = timed(on_parquet(EVERY_COLUMN), targets)
    finally:
        discard(workdir, server)
        if trading:
            report(trading, args.rows, args.fixtures)
    if not results:
        return
    print(f"\nline movement of one fixture/market, {args.rows:,} price_ticks, {args.queries} queries each\n")
    print("| engine, query | median ms | p90 ms | rows | vs every column |")
    print("|---|---:|---:|---:|---:|")
    for name, (median, p90, rows) in results.items():
        engine = name.split(" line movement")[0].split(" price_history")[0].split(" every column")[0]
        plain = results[f"{engine} every column"][0]
        print(f"| {name} | {median:.1f} | {p90:.1f} | {f'{rows:,}' if rows else ''} | {median / plain:.2f}× |")


def hot_day(rows: int, queries: int) -> None:
    """One fixture on a hot day: PostgreSQL alone against the query surface, as written and as run."""
    import os

    workdir, server = scratch_server("query")
    url = server.url()
    migrate.upgrade(url)
    rng = random.Random(7)
    targets = [(f"id10000{rng.randrange(400):04d}61624412", rng.choice(MARKETS)) for _ in range(queries)]
    results: list[tuple[str, float, float, float, float, int, str]] = []
    try:
        day = fill_price_day(url, rows)
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        lookups = {  # name: (SQL for both engines, its parameters from a fixture and a market)
            "line movement (LINE_MOVEMENT)": (LINE_MOVEMENT, lambda f, m: (f, m)),
            "price_history, one market": (HISTORY, lambda f, m: (f, m)),
            "prices_as_of(noon), every market": (
                "SELECT * FROM prices_as_of(CAST(%s AS timestamptz)) WHERE fixture_id = %s"
                " ORDER BY market_id, outcome_id, bookmaker, raw_id", lambda f, m: (noon, f)),
        }
        engine = Engine.warehouse(url)
        on_duckdb = Engine(engine.con)  # the surface without PostgreSQL's answer: as with a day retained
        print("querying …", file=sys.stderr)
        with psycopg.connect(url, autocommit=True) as conn:
            for name, (sql, params) in lookups.items():
                def postgres(f: str, m: str, sql: str = sql, params: Any = params) -> list[tuple[Any, ...]]:
                    return conn.cursor(binary=True).execute(sql, params(f, m)).fetchall()

                def written(f: str, m: str, sql: str = sql, params: Any = params) -> list[tuple[Any, ...]]:
                    return engine.con.execute(sql.replace("%s", "?"), list(params(f, m))).fetchall()

                def indexable(f: str, m: str, sql: str = sql, params: Any = params) -> list[tuple[Any, ...]]:
                    return on_duckdb.rows(sql, *params(f, m))

                def run(f: str, m: str, sql: str = sql, params: Any = params) -> list[tuple[Any, ...]]:
                    return engine.rows(sql, *params(f, m))

                ways = (postgres, written, indexable, run)
                same = all(way(f, m) == postgres(f, m) for f, m in targets[:3] for way in ways[1:])
                times = interleaved(ways, targets)
                results.append((name, *times, len(postgres(*targets[-1])), "yes" if same else "NO"))
    finally:
        discard(workdir, server)
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\none fixture on a hot day of {rows:,} price_ticks (nothing exported), median ms of {queries} lookups"
          f" (the four ways in turn on each) after a warm-up; load average {load}\n")
    print("| query | PostgreSQL alone | surface, DuckDB as written | × | surface, DuckDB with IN lists | × |"
          " surface, Engine.rows | × | rows | same rows |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, pg, as_written, in_lists, as_run, count, same in results:
        print(f"| {name} | {pg:.1f} | {as_written:.1f} | {as_written / pg:.1f}× | {in_lists:.1f} | {in_lists / pg:.1f}×"
              f" | {as_run:.1f} | {as_run / pg:.2f}× | {count:,} | {same} |")


def report(trading: list[tuple[str, str, float | None, int, float | None, int]], rows: int, fixtures: int) -> None:
    def seconds(ms: float | None, count: int) -> str:
        return "stopped" if ms is None else f"{ms / 1000:.1f} ({count:,})"

    print(f"\ntrading relations on {rows:,} price_ticks: one fixture (median of {fixtures}, ms, rows) and the whole"
          " day (s, rows)\n")
    print("| relation | engine | one fixture ms | rows | whole day s (rows) |")
    print("|---|---|---:|---:|---:|")
    for name, engine, fixture_ms, fixture_rows, whole_ms, whole_rows in trading:
        whole = "–" if whole_rows < 0 else seconds(whole_ms, whole_rows)
        print(f"| {name} | {engine} | {fixture_ms:.0f} | {fixture_rows:,} | {whole} |")


if __name__ == "__main__":
    main()
