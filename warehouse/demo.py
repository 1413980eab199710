"""`warehouse demo`: the main job on embedded defaults, end to end, with a live view.

A private PostgreSQL (the demo's own database on it, unless asked to write into the warehouse), the
migrations, past days of simulated matches if asked (`--days`), every simulated vendor on one market
collected for a while, the Parquet export, a line-movement chart, and what to try next.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from warehouse.analysis.engine import Engine
from warehouse.analysis.plot import chart_market
from warehouse.collect.metrics import REGISTRY
from warehouse.collect.service import collect
from warehouse.collect.settings import feed_settings
from warehouse.collect.status import source_status
from warehouse.config import WriterSettings, config_from_text
from warehouse.console import out, say, status_table
from warehouse.lake import EXPORT_TABLES
from warehouse.lifecycle.export import export_all
from warehouse.lifecycle.pending import pending
from warehouse.lifecycle.storage import Lake
from warehouse.simulate.fleet import ENV, Fleet
from warehouse.simulate.market import MARKET_1X2, Fixture
from warehouse.store import migrate
from warehouse.store.database import data_dir, scalar


@dataclass(frozen=True)
class Target:
    """Where the demo writes: a database, its lake and spools; `demo`: the demo's own (made again each run)."""

    url: str
    where: str  # for the user
    export_root: Path | Lake
    spool_root: Path
    demo: bool

    def start_over(self) -> None:
        """The demo's own lake and spool go with its database (theirs only: nothing of a warehouse's)."""
        assert self.demo
        for folder in (self.export_root, self.spool_root):
            assert isinstance(folder, Path)  # the demo's own lake is a directory
            shutil.rmtree(folder, ignore_errors=True)


def run(target: Target, seconds: float, seed: int | None = None, days: int = 0) -> bool:
    """The whole demo; False when Ctrl-C stopped it (after saying what was kept). `seed`: of the
    simulated matches (default: a new one, printed, so a run can be replayed); `days`: past days of
    history played first."""
    started = time.monotonic()
    seed = int(time.time() * 1000) % 100_000 if seed is None else seed
    url, where, export_root, spool_root = target.url, target.where, target.export_root, target.spool_root
    done(where)
    with out.status("applying migrations…"):
        migrate.upgrade(url)
    done(f"schema at revision {migrate.current_revision(url)}")
    if days:
        _history(target, days, seed)
    finished, frames, featured = asyncio.run(_collect(url, seconds, seed))
    if not finished:
        me = invocation()
        aimed = f"WAREHOUSE_DATABASE_URL=\"$({me} db url --demo)\" " if target.demo else ""
        say(f"stopped by Ctrl-C after {time.monotonic() - started:.1f} s: the {frames:,} frames collected are kept in"
            f" the {where}; no export or chart was made (`{aimed}{me} export --day today` and `{aimed}{me} plot`"
            " make them)")
        return False
    out.print(status_table(source_status(url, spool_root)))
    with psycopg.connect(url, autocommit=True) as conn:
        # Statistics now, not at autovacuum's first look a minute on: without them the planner counts on
        # a handful of rows and the README's arbitrage example takes minutes (docs/trading-relations.md).
        conn.execute("ANALYZE")

    with out.status("exporting to Parquet…"):
        # Today so far: the nightly run exports the day again once it is complete.
        exported = export_all(url, export_root, pending(url, EXPORT_TABLES, today_too=True))
    done(f"exported {exported:,} rows to {export_root}")
    with out.status("drawing a line-movement chart…"):
        charts = data_dir() / "charts"
        charts.mkdir(parents=True, exist_ok=True)
        path = charts / "demo-line-movement.png"
        match = f"{featured.home} v {featured.away} {featured.home_score}-{featured.away_score}"
        engine = Engine.warehouse(url)
        try:
            chart = chart_market(engine, featured.fixture_id, MARKET_1X2, path, default_dir=charts)
            what = f"{match} (fixture {featured.fixture_id})"
        except ValueError:  # a run of a second or two may end before that match's first price came in
            chart, what = chart_market(engine, None, None, path, default_dir=charts), "the busiest market"
    done(f"line-movement chart of {what}: {chart}")

    stored = Table(title="rows stored", title_justify="left")
    stored.add_column("table")
    stored.add_column("rows", justify="right")
    for name, rows in table_rows(url, EXPORT_TABLES).items():
        stored.add_row(name, f"{rows:,}")
    out.print(stored)
    me = invocation()
    jupyter = str(Path(me).with_name("jupyter")) if "/" in me else "jupyter"  # from the same virtualenv
    say(f"\nready in {time.monotonic() - started:.1f}s. Next:")
    if target.demo:
        say(f"  export WAREHOUSE_DATABASE_URL=\"$({me} db url --demo)\"  # the commands below read the demo's"
            " database (unset it for your own warehouse)")
    for command, why in [
        (f"psql \"$({me} db url)\" -c 'SELECT received_at, bookmaker, outcome_id, price, prev_price"
         " FROM price_history LIMIT 5'", "SQL on the warehouse"),
        (f"psql \"$({me} db url)\" -c \"SELECT * FROM steam_moves(0.03, 2, '1 minute')\"", "steam moves"),
        (f"{me} status", "per-source health"),
        (f"{me} plot --fixture {featured.fixture_id} --market {MARKET_1X2}", "chart a market (any fixture, market)"),
        (f"WAREHOUSE_EXPORT_DIR={export_root} {jupyter} lab notebooks/line_movement.ipynb",
         "the notebook (pip install jupyterlab)"),
    ]:
        say(f"  {command:<72} # {why}")
    return True


def _history(target: Target, days: int, seed: int) -> None:
    """`days` past afternoons of simulated matches, oldest first, through the writer."""
    from warehouse.simulate import history

    played: list[history.DayPlayed] = []
    with out.status(f"playing {days} past day{'s' if days != 1 else ''} of simulated matches…") as status:
        def progress(day: history.DayPlayed) -> None:
            played.append(day)
            status.update(f"played {day.day}: {day.frames:,} frames ({len(played)} of {days})…")

        asyncio.run(history.play(target.url, history.days_before(datetime.now(UTC).date(), days), seed,
                                 target.spool_root / "demo-history", progress))
    done(f"history: {days} past day{'s' if days != 1 else ''} ({played[0].day} to {played[-1].day}), an afternoon"
         f" of {history.SOURCE} frames each: {sum(d.frames for d in played):,} frames,"
         f" {sum(d.fixtures for d in played)} fixtures")


def done(what: str) -> None:
    out.print(f"[green]✓[/green] {escape(what)}", highlight=False)


async def _collect(url: str, seconds: float, seed: int) -> tuple[bool, int, Fixture]:
    """Every simulated feed on loopback, one market model, collected for `seconds` with a live view.
    Whether it ran its time (not stopped by Ctrl-C or SIGTERM first), the frames it stored, and the
    match that kicks off a little after the start and ends just before the end."""
    # Kick-off 15 % into the run (plus the second or so the collector takes to connect, so some
    # pre-match shows), full time at 95 %.
    kickoff = min(0.15 * seconds + 1.0, 0.4 * seconds)
    fleet = Fleet(seed=seed, match_s=0.95 * seconds - kickoff, kickoff_in_s=kickoff)
    await fleet.start()
    assert fleet.market is not None
    featured = fleet.market.fixtures[0]
    done(f"simulated matches of seed {seed} (the same again: --seed {seed}); {featured.home} v {featured.away}"
         f" kicks off in {fleet.kickoff_in_s:.0f} s")
    feeds = feed_settings(config_from_text(fleet.toml(), "the demo's feeds"), ENV)
    stop = asyncio.Event()

    def frames() -> int:
        return int(sum(REGISTRY.get_sample_value("warehouse_frames_total", {"source": f.name}) or 0 for f in feeds))

    def view() -> Table:
        table = Table(title=f"collecting from simulators for {seconds:g} s", title_justify="left")
        for column in ("feed", "frames", "rows", "receive→commit"):
            table.add_column(column, justify="left" if column == "feed" else "right")
        for feed in feeds:
            labels = {"source": feed.name}
            frames = REGISTRY.get_sample_value("warehouse_frames_total", labels) or 0
            rows = REGISTRY.get_sample_value("warehouse_rows_total", labels) or 0
            count = REGISTRY.get_sample_value("warehouse_commit_latency_seconds_count", labels) or 0
            fast = REGISTRY.get_sample_value("warehouse_commit_latency_seconds_bucket", {**labels, "le": "0.1"}) or 0
            share = f"{100 * fast / count:.0f}% ≤ 100 ms" if count else "–"
            table.add_row(feed.name, f"{frames:,.0f}", f"{rows:,.0f}", share)
        return table

    finished = False

    async def stop_later() -> None:
        nonlocal finished
        with Live(view(), console=out, refresh_per_second=4, transient=not out.is_terminal) as live:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not stop.is_set():
                await asyncio.sleep(0.25)
                live.update(view())
        finished = not stop.is_set()
        stop.set()

    timer = asyncio.create_task(stop_later())
    try:
        await collect(url, feeds, WriterSettings(), stop=stop)
    finally:
        timer.cancel()
        await fleet.stop()
    out.print(view())
    return finished, frames(), featured


def invocation() -> str:
    """How the user ran us, so suggested commands work as typed (a venv's bin is often not on PATH)."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py"):
        return "python -m warehouse"
    return argv0 if "/" in argv0 and not Path(argv0).is_absolute() else Path(argv0).name


def table_rows(url: str, names: tuple[str, ...]) -> dict[str, int]:
    """Exact row counts (fine for a demo; on a big warehouse prefer pg_class.reltuples)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {name: scalar(conn, f"SELECT count(*) FROM {name}") for name in names}
