"""The `warehouse` command line: thin wrappers over the modules that do the work."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from warehouse.config import Config, ConfigError, load_config
from warehouse.store import migrate
from warehouse.store.database import (
    configured_database_url,
    data_dir,
    embedded_server,
    redact_url,
    resolve_database_url,
)
from warehouse.store.embedded import EmbeddedError
from warehouse.store.writer import WriterSettings

app = typer.Typer(
    help="odds-warehouse: record live sports-odds feeds into an append-only PostgreSQL warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database: migrations, URL, the embedded server.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Piped or under cron there is no terminal width to respect: never wrap a table row.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)


@dataclass
class Context:
    database_url: str | None
    config: Config

    def url(self) -> str:
        return resolve_database_url(self.database_url, self.config.database_url)

    def spool_root(self) -> Path:
        spool_dir = self.config.spool_dir
        return spool_dir.parent if spool_dir else data_dir() / "spool"


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can hit into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, EmbeddedError, ValueError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
        except OSError as exc:
            err.print(f"[red]error:[/red] {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                      highlight=False)
        except Exception as exc:  # database errors from psycopg/sqlalchemy/alembic
            message = " ".join(str(exc).split())[:300]
            err.print(f"[red]error:[/red] {type(exc).__name__}: {message}", highlight=False)
            err.print("check the database URL (`warehouse db url`) and that the server is up", highlight=False)
        raise typer.Exit(2)

    return wrapper


@app.callback()
def main(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="PostgreSQL URL; default: $WAREHOUSE_DATABASE_URL, the config, "
                                             "else the embedded server", show_default=False),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file", show_default=False)
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more detail")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    ctx.obj = Context(database_url=database_url, config=loaded)


# -- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
@_friendly_errors
def db_upgrade(ctx: typer.Context, revision: str = typer.Option("head", help="target revision")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    url = ctx.obj.url()
    before = migrate.current_revision(url)
    migrate.upgrade(url, revision)
    after = migrate.current_revision(url)
    out.print(f"schema at revision {after} (was {before or 'empty'}) in {redact_url(url)}", highlight=False)


@db_app.command("downgrade")
@_friendly_errors
def db_downgrade(
    ctx: typer.Context,
    revision: str = typer.Option("base", help="target revision; base removes every table"),
    yes: bool = typer.Option(False, "--yes", help="confirm: downgrading drops tables and their data"),
) -> None:
    """Undo migrations down to REVISION. Dropping tables loses their rows, so --yes is required."""
    if not yes:
        err.print("refusing to downgrade without --yes: it drops tables and every row in them")
        raise typer.Exit(2)
    url = ctx.obj.url()
    migrate.downgrade(url, revision)
    out.print(f"schema at revision {migrate.current_revision(url) or 'base (empty)'}")


@db_app.command("url")
@_friendly_errors
def db_url(ctx: typer.Context) -> None:
    """Print the database in use (starts the embedded server if that is the one). Try `psql $(warehouse db url)`."""
    print(ctx.obj.url())


@db_app.command("start")
@_friendly_errors
def db_start() -> None:
    """Start the embedded PostgreSQL (initialising it on first use)."""
    print(embedded_server().ensure_running())


@db_app.command("stop")
@_friendly_errors
def db_stop() -> None:
    """Stop the embedded PostgreSQL (data stays; the next command starts it again)."""
    server = embedded_server()
    if server.is_running():
        server.stop()
        out.print(f"stopped the embedded PostgreSQL in {server.data_dir}")
    else:
        out.print("the embedded PostgreSQL is not running")


# -- status -----------------------------------------------------------------------------------


@app.command()
@_friendly_errors
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    metrics_port: Annotated[list[int] | None, typer.Option(
        "--metrics-port", help="also read the counters of the collector running with this --metrics-port "
                               "(repeatable: one per collector process)")] = None,
) -> None:
    """Per source: last frame age, rows in the last minute, reconnects, gaps, quarantine, spool backlog."""
    from warehouse.collect.metrics import scrape
    from warehouse.store.status import source_status

    rows = source_status(ctx.obj.url(), ctx.obj.spool_root())
    live: dict[str, dict[str, float]] = {}
    for port in metrics_port or []:
        try:
            live |= scrape(port)
        except OSError as exc:
            err.print(f"[yellow]warning:[/yellow] no collector metrics on 127.0.0.1:{port} ({exc}); "
                      "its feeds show from the database only", highlight=False)
    if as_json:
        print(json.dumps([r.as_json() | ({"collector": live[r.source]} if r.source in live else {})
                          for r in rows], indent=2))
        return
    _print_status(rows)
    if live:
        _print_live(live)


def _print_status(rows: list[Any]) -> None:
    if not rows:
        out.print("no source has sent anything yet")
        return
    table = Table(title="sources", title_justify="left")
    for column in ("source", "last frame", "frames/min", "rows/min", "reconnects 24h", "gaps 24h",
                   "not listening 24h", "quarantined 24h", "spool backlog"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for r in rows:
        age = "never" if r.last_frame_age_s is None else f"{_duration(r.last_frame_age_s)} ago"
        table.add_row(r.source, age, str(r.frames_last_minute), str(r.rows_last_minute), str(r.reconnects_24h),
                      str(r.gaps_24h), _duration(r.gap_seconds_24h), str(r.quarantined_24h),
                      str(r.spool_backlog_frames))
    out.print(table)


def _print_live(live: dict[str, dict[str, float]]) -> None:
    table = Table(title="running collector (since it started)", title_justify="left")
    columns = [("frames", "frames"), ("rows", "rows"), ("received_bytes", "bytes"), ("reconnects", "reconnects"),
               ("quarantined", "quarantined"), ("commit_latency_p99_s", "p99 receive→commit")]
    table.add_column("source")
    for _, title in columns:
        table.add_column(title, justify="right")
    for source, values in sorted(live.items()):
        cells = []
        for key, _ in columns:
            value = values.get(key)
            if value is None:
                cells.append("–")
            elif key == "commit_latency_p99_s":
                cells.append(f"≤ {value * 1000:g} ms")
            else:
                cells.append(f"{value:,.0f}")
        table.add_row(source, *cells)
    out.print(table)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


# -- collect / simulate -----------------------------------------------------------------------


@app.command()
@_friendly_errors
def collect(
    ctx: typer.Context,
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="serve Prometheus /metrics on "
                                            "127.0.0.1:PORT"),
    feed: Annotated[list[str] | None, typer.Option("--feed", help="only this feed of the config (repeatable): "
                                                   "run busy feeds in processes of their own")] = None,
) -> None:
    """Run the config's feeds until stopped (SIGINT/SIGTERM: flush, record the disconnect, exit 0; SIGHUP: reload)."""
    from warehouse.collect import collect as run_collect
    from warehouse.collect import writer_identity
    from warehouse.collect.settings import feed_settings, only

    config, selected = ctx.obj.config, feed or []
    feeds = only(feed_settings(config), selected, config)
    writer_name, writer_settings = writer_identity(selected, config.writer_settings())
    _log_at_least_info()
    asyncio.run(run_collect(ctx.obj.url(), feeds, writer_settings, writer_name=writer_name,
                            metrics_port=metrics_port,
                            reload=lambda: only(feed_settings(load_config(config.path)), selected, config)))


@app.command()
@_friendly_errors
def simulate(ctx: typer.Context, seed: int = typer.Option(1, help="seed of the simulated markets")) -> None:
    """Run local simulators of the config's feeds, where their URLs point (127.0.0.1 only), until Ctrl-C."""
    from warehouse.collect.settings import feed_settings
    from warehouse.simulate import simulate as run_simulators

    feeds = feed_settings(ctx.obj.config)
    _log_at_least_info()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulators(feeds, stop, seed=seed)

    asyncio.run(main())


def _log_at_least_info() -> None:
    """Long-running commands say what they are doing (connects, gaps, reconnects) on stderr."""
    logging.getLogger("warehouse").setLevel(min(logging.getLogger().level, logging.INFO))


# -- export -----------------------------------------------------------------------------------


@app.command()
@_friendly_errors
def export(
    ctx: typer.Context,
    day: str | None = typer.Option(None, help="export (again) this UTC day, YYYY-MM-DD (today: so far)"),
    since: str | None = typer.Option(None, help="first UTC day to export (again)"),
    until: str | None = typer.Option(None, help="last UTC day to export (again)"),
    table: Annotated[list[str] | None, typer.Option("--table", help="only this table (repeatable)")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="export directory (default: config, else data "
                                                                  "dir)")] = None,
) -> None:
    """Export complete UTC days to Parquet: by default every day not exported yet, for every fact table."""
    from datetime import date as Date

    from rich.progress import Progress

    from warehouse.export.parquet import EXPORT_TABLES, export_all, pending

    root = directory or ctx.obj.config.export_dir or data_dir() / "exports"
    names = tuple(table) if table else EXPORT_TABLES
    unknown = [t for t in names if t not in EXPORT_TABLES]
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r}; exported tables: {', '.join(EXPORT_TABLES)}")
    first = Date.fromisoformat(day or since) if (day or since) else None
    last = Date.fromisoformat(day or until) if (day or until) else None
    url = ctx.obj.url()
    # A day named explicitly may be today: exported as it is so far, and again once it is complete.
    work = pending(url, names, first, last, redo=bool(day or since or until), today_too=bool(day or until))
    with Progress(console=out, transient=True, disable=not out.is_terminal) as progress:
        task = progress.add_task("exporting", total=len(work))

        def step(name: str, one_day: Date) -> None:
            progress.update(task, description=f"{name} {one_day}", completed=work.index((name, one_day)))

        rows = export_all(url, root, work, step)
    if out.is_terminal or work:
        out.print(f"exported {len(work)} table-days ({rows:,} rows) to {root}", highlight=False)


# -- plot -------------------------------------------------------------------------------------


@app.command()
@_friendly_errors
def plot(
    ctx: typer.Context,
    fixture: str | None = typer.Option(None, help="fixture id (default: the market most bookmakers price, found by"
                                                  " reading every price: name it on a big warehouse)"),
    market: str | None = typer.Option(None, help="market id (default: with --fixture, its busiest market)"),
    out_file: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: "
                                                                  "line-<fixture>-<market>.png)")] = None,
    parquet_dir: Annotated[Path | None, typer.Option("--parquet", help="read this export directory instead of "
                                                                         "PostgreSQL")] = None,
) -> None:
    """Chart the line movement of every outcome of one fixture's market across bookmakers."""
    path = _plot(ctx.obj.url if parquet_dir is None else None, parquet_dir, fixture, market, out_file)
    out.print(f"wrote {path}", highlight=False)


def _plot(url: Callable[[], str] | None, parquet_dir: Path | None, fixture: str | None, market: str | None,
          out_file: Path | None) -> Path:
    from warehouse.analysis import plot as charts
    from warehouse.analysis.relations import BUSIEST_MARKETS, LINE_MOVEMENT

    if parquet_dir is not None:
        from warehouse.analysis.parquet import connect

        con = connect(parquet_dir)

        def run(sql: str, *params: object) -> list[tuple]:
            return con.execute(sql.replace("%s", "?"), list(params)).fetchall()
    else:
        from warehouse.store.reads import select

        database = url()

        def run(sql: str, *params: object) -> list[tuple]:
            return select(database, sql, *params)

    if fixture is None or market is None:
        candidates = [row for row in run(BUSIEST_MARKETS, 1000) if fixture in (None, row[0])]
        if not candidates:
            raise ValueError("no prices stored yet" + (f" for fixture {fixture!r}" if fixture else "")
                             + "; run `warehouse demo` or a collector first")
        fixture, market = candidates[0][:2]
    path = out_file or Path(f"line-{fixture}-{market}.png")
    return charts.line_movement(run(LINE_MOVEMENT, fixture, market), f"fixture {fixture} · market {market}", path)


# -- demo -------------------------------------------------------------------------------------


@app.command()
@_friendly_errors
def demo(ctx: typer.Context, seconds: float = typer.Option(30.0, help="how long to collect")) -> None:
    """The main job on embedded defaults: PostgreSQL, migrations, simulators → collectors, Parquet, a chart."""
    from warehouse.export.parquet import EXPORT_TABLES, export_all, pending
    from warehouse.store.reads import table_rows
    from warehouse.store.status import source_status

    started = time.monotonic()
    external = configured_database_url(ctx.obj.database_url, ctx.obj.config.database_url)
    with out.status("starting PostgreSQL…"):
        url = ctx.obj.url()
    where = "external database" if external else f"embedded PostgreSQL in {embedded_server().data_dir}"
    out.print(f"[green]✓[/green] {where}", highlight=False)
    with out.status("applying migrations…"):
        migrate.upgrade(url)
    out.print(f"[green]✓[/green] schema at revision {migrate.current_revision(url)}", highlight=False)
    asyncio.run(_demo_collect(url, seconds))
    _print_status(source_status(url, ctx.obj.spool_root()))

    export_root = ctx.obj.config.export_dir or data_dir() / "exports"
    with out.status("exporting to Parquet…"):
        # Today so far: the nightly run exports the day again once it is complete.
        exported = export_all(url, export_root, pending(url, EXPORT_TABLES, today_too=True))
    out.print(f"[green]✓[/green] exported {exported:,} rows to {export_root}", highlight=False)
    with out.status("drawing a line-movement chart…"):
        chart = _plot(lambda: url, None, None, None, data_dir() / "charts" / "demo-line-movement.png")
    out.print(f"[green]✓[/green] line-movement chart: {chart}", highlight=False)

    stored = Table(title="rows stored", title_justify="left")
    stored.add_column("table")
    stored.add_column("rows", justify="right")
    for name, rows in table_rows(url, EXPORT_TABLES).items():
        stored.add_row(name, f"{rows:,}")
    out.print(stored)
    me = _invocation()
    jupyter = str(Path(me).with_name("jupyter")) if "/" in me else "jupyter"  # from the same virtualenv
    out.print(f"\nready in {time.monotonic() - started:.1f}s. Next:", highlight=False)
    for command, why in [
        (f"psql \"$({me} db url)\" -c 'SELECT * FROM price_history LIMIT 5'", "SQL on the warehouse"),
        (f"psql \"$({me} db url)\" -c \"SELECT * FROM steam_moves(0.03, 2, '1 minute')\"", "steam moves"),
        (f"{me} status", "per-source health"),
        (f"{me} plot --fixture F --market M", "chart any market"),
        (f"WAREHOUSE_EXPORT_DIR={export_root} {jupyter} lab notebooks/line_movement.ipynb",
         "the notebook (pip install jupyterlab)"),
    ]:
        out.print(f"  {command:<72} # {why}", highlight=False)


async def _demo_collect(url: str, seconds: float) -> None:
    """All four simulated feeds on loopback, one market model, collected for `seconds` with a live view."""
    from rich.live import Live

    from warehouse.collect import collect as run_collect
    from warehouse.collect.metrics import REGISTRY
    from warehouse.collect.settings import feed_settings
    from warehouse.config import config_from_text
    from warehouse.simulate.fleet import ENV, Fleet

    fleet = Fleet()
    await fleet.start()
    feeds = feed_settings(config_from_text(fleet.toml(), "the demo's feeds"), ENV)
    stop = asyncio.Event()

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

    async def stop_later() -> None:
        with Live(view(), console=out, refresh_per_second=4, transient=not out.is_terminal) as live:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                live.update(view())
        stop.set()

    timer = asyncio.create_task(stop_later())
    try:
        await run_collect(url, feeds, WriterSettings(), stop=stop)
    finally:
        timer.cancel()
        await fleet.stop()
    out.print(view())


def _invocation() -> str:
    """How the user ran us, so suggested commands work as typed (a venv's bin is often not on PATH)."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py"):
        return "python -m warehouse"
    return argv0 if "/" in argv0 and not Path(argv0).is_absolute() else Path(argv0).name
