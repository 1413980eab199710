"""Availability's relations before and after migration 0018, side by side in one run (docs/performance.md,
"Availability in observed_ticks").

    python bench/availability.py                          # 10,000,000 rows: fill ~3 min, then ~10 min
    python bench/availability.py --rows 2000000 --fixtures 3
    python bench/availability.py --url postgresql://…     # a database bench/query.py's day is already in

bench/query.py's day (400 fixtures × 4 markets × 3 outcomes × 8 bookmakers) and bench/trading.py's desk and
availability flags, in one migrated database. Three sets of the relations read the same rows:

  0010   migration 0010's text (before availability: observed_ticks was the observed rows alone)
  0016   migration 0016's (availability, as first written)
  now    relations.CURRENT (migration 0018's text)

0010's and 0016's are created in schemas of their own from the migrations' frozen text; each query runs
with that schema first on the search_path. On the query surface (warehouse.analysis.connect(url): DuckDB
over the hot day through the postgres scan), `before` is the package's relations at `--before` (a git
revision: 0016's DuckDB text, which no migration freezes) and `now` today's, each defined again on the
connection before each query. Per relation, the median of `--fixtures` fixtures (the sets taking turns
fixture by fixture, after a warm-up), until the rows are in Python; and whether each set gave the same
rows as `now` (0010's differ by design: it knows no flags). `--lake` does the same on the day's Parquet
export alone (warehouse.analysis.connect(export_dir=…)).

Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import discard, scratch_server  # noqa: E402
from bench.export import fill_price_day  # noqa: E402
from bench.trading import fill_desk, relations  # noqa: E402
from warehouse import analysis  # noqa: E402
from warehouse.analysis import relations as current  # noqa: E402
from warehouse.lifecycle.export import export_day  # noqa: E402
from warehouse.store import migrate  # noqa: E402

MIGRATIONS = ROOT / "migrations" / "versions"
SETS = {"0010": "0010_trading_relations", "0016": "0016_availability"}
# The relations of bench/trading.py that observed_ticks' cost shows in, and observed_ticks itself.
ONE_FIXTURE = ("prices_as_of(noon)", "market_overround", "best_prices_as_of(noon)", "fair_prices_as_of(noon, 'shin')",
               "consensus_as_of(noon, 'shin')", "steam_moves(0.03, 2, 1 min, day)", "lead_lag(0.03, 1 min, day)",
               "arbitrage_windows(0.0, day)", "closing_line_value")
EXTRA = [("observed_ticks", "SELECT * FROM observed_ticks WHERE fixture_id = %s"),
         ("price_history", "SELECT * FROM price_history WHERE fixture_id = %s")]


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_frozen(url: str) -> None:
    """Each migration's relations in a schema named after it, as migrating creates them: 0010's, then
    for 0016 each relation 0016 changed, replaced (0016's text of the ones it kept is never run)."""
    modules = {schema: _module(f"m{schema}", MIGRATIONS / f"{name}.py") for schema, name in SETS.items()}
    first = modules["0010"].CREATE
    with psycopg.connect(url, autocommit=True) as conn:
        for schema, module in modules.items():
            conn.execute(f'DROP SCHEMA IF EXISTS "r{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "r{schema}"')
            conn.execute(f'SET search_path = "r{schema}", public')
            kept = {" ".join(statement.split()) for statement in first}
            changed = [s for s in module.CREATE if " ".join(s.split()) not in kept]
            for statement in [*first, *(re.sub(r"^\s*CREATE (VIEW|FUNCTION)", r"CREATE OR REPLACE \1", s)
                                         for s in changed)]:
                if not statement.lstrip().startswith("COMMENT"):
                    conn.execute(statement)


def relations_at(revision: str) -> ModuleType:
    """warehouse/analysis/relations.py as it was at a git revision."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:warehouse/analysis/relations.py"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(f"/tmp/owh-bench-relations-{revision.replace('/', '_')}.py")
    path.write_text(text)
    return _module("relations_before", path)


def rows(result: list[tuple[Any, ...]]) -> list[str]:
    return sorted(map(repr, result))


def compare(runs: dict[str, Callable[[str], list[tuple[Any, ...]]]], fixtures: list[str],
            ) -> dict[str, tuple[float, int, bool]]:
    """Per set: median ms over `fixtures` (the sets taking turns), rows of the last, same rows as `now`."""
    names = list(runs)
    for name in names:
        runs[name](fixtures[0])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    counts: dict[str, int] = {}
    same = dict.fromkeys(names, True)
    for i, fixture in enumerate(fixtures):
        got = {}
        for name in names if i % 2 == 0 else reversed(names):
            started = time.perf_counter()
            got[name] = runs[name](fixture)
            times[name].append((time.perf_counter() - started) * 1000)
            counts[name] = len(got[name])
        for name in names:
            same[name] = same[name] and rows(got[name]) == rows(got["now"])
    return {name: (statistics.median(times[name]), counts[name], same[name]) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--url", help="a database that already holds bench/query.py's day and desk")
    parser.add_argument("--day", type=date.fromisoformat, help="that day (default: yesterday, as the fill makes it)")
    parser.add_argument("--fixtures", type=int, default=5, help="fixtures each relation is timed on")
    parser.add_argument("--before", default="0cdef43", help="git revision of the query surface's `before` relations")
    parser.add_argument("--surface", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lake", action=argparse.BooleanOptionalAction, default=True,
                        help="also the Parquet export of the day alone (warehouse.analysis.connect(export_dir=…))")
    parser.add_argument("--only", help="comma-separated relation names (default: all)")
    args = parser.parse_args()
    workdir = server = None
    lake: Path | None = None
    try:
        if args.url:
            url = args.url
            migrate.upgrade(url)  # `now` is the package's: the database's own relations, at head
            with psycopg.connect(url) as conn:
                day = args.day or conn.execute("SELECT min(received_at)::date FROM price_ticks").fetchone()[0]
        else:
            workdir, server = scratch_server("availability")
            url = server.url()
            migrate.upgrade(url)
            day = fill_price_day(url, args.rows)
            fill_desk(url, day)
        create_frozen(url)
        rng = random.Random(23)
        fixtures = [f"id10000{rng.randrange(400):04d}61624412" for _ in range(args.fixtures)]
        queries = [(name, one) for name, one, _ in relations(day) if name in ONE_FIXTURE] + EXTRA
        if args.only:
            queries = [(name, sql) for name, sql in queries if name.split("(")[0] in args.only.split(",")]
        table: list[tuple[str, str, dict[str, tuple[float, int, bool]]]] = []
        with psycopg.connect(url, autocommit=True) as conn:
            def on_postgres(schema: str, sql: str) -> Callable[[str], list[tuple[Any, ...]]]:
                def run(fixture: str) -> list[tuple[Any, ...]]:
                    conn.execute(f"SET search_path = {schema}")
                    return conn.cursor(binary=True).execute(sql, (fixture,)).fetchall()
                return run

            for name, sql in queries:
                print(f"{name} on PostgreSQL …", file=sys.stderr, flush=True)
                runs = {s: on_postgres(f'"r{s}", public', sql) for s in SETS} | {"now": on_postgres("public", sql)}
                table.append((name, "PostgreSQL", compare(runs, fixtures)))
        duckdb: list[tuple[str, Any]] = []
        if args.surface:
            duckdb.append(("query surface", analysis.connect(url)))
        if args.lake:
            lake = Path(tempfile.mkdtemp(prefix="owh-bench-availability-lake-"))
            print("exporting …", file=sys.stderr, flush=True)
            for table_name, days in (("price_ticks", 1), ("fixture_changes", 2), ("market_changes", 2)):
                for n in range(days):  # the desk's flags run into the next day
                    export_day(url, lake, table_name, day + timedelta(days=n))
            duckdb.append(("Parquet", analysis.connect(export_dir=lake)))
        before = relations_at(args.before) if duckdb else None
        for engine, con in duckdb:
            con.execute("SET memory_limit = '6GB'")

            def on_duckdb(module: ModuleType, sql: str, con: Any = con) -> Callable[[str], list[tuple[Any, ...]]]:
                def run(fixture: str) -> list[tuple[Any, ...]]:
                    for relation in module.CURRENT:
                        con.execute(module.duckdb_ddl(relation))
                    return con.execute(sql.replace("%s", "?"), [fixture]).fetchall()
                return run

            for name, sql in queries:
                print(f"{name} on {engine} …", file=sys.stderr, flush=True)
                runs = {"0016": on_duckdb(before, sql), "now": on_duckdb(current, sql)}
                table.append((name, engine, compare(runs, fixtures)))
    finally:
        if lake is not None:
            shutil.rmtree(lake, ignore_errors=True)
        if workdir is not None:
            discard(workdir, server)
    print(f"\none fixture, median of {args.fixtures} (ms; rows; = same rows as now)\n")
    print("| relation | engine | 0010 ms | 0016 ms | now ms | now / 0016 | now / 0010 | rows (0010, 0016, now) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, engine, result in table:
        def ms(s: str, result: dict[str, tuple[float, int, bool]] = result) -> str:
            return f"{result[s][0]:,.0f}" if s in result else "–"

        def ratio(s: str, result: dict[str, tuple[float, int, bool]] = result) -> str:
            return f"{result['now'][0] / result[s][0]:.2f}×" if s in result else "–"

        counts = ", ".join(f"{result[s][1]:,}{'' if result[s][2] else ' ≠'}" for s in ("0010", "0016", "now")
                           if s in result)
        print(f"| `{name}` | {engine} | {ms('0010')} | {ms('0016')} | {ms('now')} | {ratio('0016')} | {ratio('0010')}"
              f" | {counts} |")


if __name__ == "__main__":
    main()
