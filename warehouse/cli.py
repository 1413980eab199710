"""The `warehouse` command line: thin wrappers over the modules that do the work."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from warehouse.config import Config, ConfigError, load_config
from warehouse.console import err, error, out, say, warning
from warehouse.store import migrate
from warehouse.store.database import (
    configured_database_url,
    data_dir,
    embedded_server,
    redact_url,
    resolve_database_url,
)
from warehouse.store.embedded import EmbeddedError
from warehouse.store.exports import ExportError

app = typer.Typer(
    help="odds-warehouse: record live sports-odds feeds into an append-only PostgreSQL warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database: migrations, URL, the embedded server.", no_args_is_help=True)
app.add_typer(db_app, name="db")

@dataclass
class Context:
    database_url: str | None
    config: Config

    def url(self) -> str:
        return resolve_database_url(self.database_url, self.config.database_url)

    def spool_root(self) -> Path:
        spool_dir = self.config.writer.spool_dir
        return spool_dir.parent if spool_dir else data_dir() / "spool"


def _friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can hit into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, EmbeddedError, ValueError) as exc:
            error(str(exc))
        except ExportError as exc:  # one line per table-day that could not be exported
            for line in str(exc).splitlines():
                error(line)
        except OSError as exc:
            error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except Exception as exc:  # database errors from psycopg/sqlalchemy/alembic
            error(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
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
        error(str(exc))
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
    say(f"schema at revision {after} (was {before or 'empty'}) in {redact_url(url)}")


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
    say(f"schema at revision {migrate.current_revision(url) or 'base (empty)'}")


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
        say(f"stopped the embedded PostgreSQL in {server.data_dir}")
    else:
        say("the embedded PostgreSQL is not running")


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
    from warehouse.console import live_table, status_table
    from warehouse.store.status import source_status

    rows = source_status(ctx.obj.url(), ctx.obj.spool_root())
    live: dict[str, dict[str, float]] = {}
    for port in metrics_port or []:
        try:
            live |= scrape(port)
        except OSError as exc:
            warning(f"no collector metrics on 127.0.0.1:{port} ({exc}); its feeds show from the database only")
    if as_json:
        print(json.dumps([r.as_json() | ({"collector": live[r.source]} if r.source in live else {})
                          for r in rows], indent=2))
        return
    out.print(status_table(rows))
    if live:
        out.print(live_table(live))


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
    from warehouse.collect.service import collect as run_collect
    from warehouse.collect.service import writer_identity
    from warehouse.collect.settings import feed_settings, only

    config, selected = ctx.obj.config, feed or []
    feeds = only(feed_settings(config), selected, config)
    writer_name, writer_settings = writer_identity(selected, config.writer)
    _log_at_least_info()
    asyncio.run(run_collect(ctx.obj.url(), feeds, writer_settings, writer_name=writer_name,
                            metrics_port=metrics_port,
                            reload=lambda: only(feed_settings(load_config(config.path)), selected, config)))


@app.command()
@_friendly_errors
def simulate(ctx: typer.Context, seed: int = typer.Option(1, help="seed of the simulated markets")) -> None:
    """Run local simulators of the config's feeds, where their URLs point (127.0.0.1 only), until Ctrl-C."""
    from warehouse.simulate import simulate as run_simulators

    _log_at_least_info()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulators(ctx.obj.config, os.environ, stop, seed=seed)

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
    first_text, last_text = day or since, day or until
    first = Date.fromisoformat(first_text) if first_text else None
    last = Date.fromisoformat(last_text) if last_text else None
    url = ctx.obj.url()
    # A day named explicitly may be today: exported as it is so far, and again once it is complete.
    work = pending(url, names, first, last, redo=bool(day or since or until), today_too=bool(day or until))
    with Progress(console=out, transient=True, disable=not out.is_terminal) as progress:
        task = progress.add_task("exporting", total=len(work))

        def step(name: str, one_day: Date) -> None:
            progress.update(task, description=f"{name} {one_day}", completed=work.index((name, one_day)))

        rows = export_all(url, root, work, step)
    if out.is_terminal or work:
        say(f"exported {len(work)} table-days ({rows:,} rows) to {root}")


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
    from warehouse.analysis.engine import ParquetEngine, PostgresEngine
    from warehouse.analysis.plot import chart_market

    engine = ParquetEngine(parquet_dir) if parquet_dir is not None else PostgresEngine(ctx.obj.url())
    say(f"wrote {chart_market(engine, fixture, market, out_file)}")


# -- demo -------------------------------------------------------------------------------------


@app.command()
@_friendly_errors
def demo(ctx: typer.Context, seconds: float = typer.Option(30.0, help="how long to collect")) -> None:
    """The main job on embedded defaults: PostgreSQL, migrations, simulators → collectors, Parquet, a chart."""
    from warehouse import demo as pipeline

    external = configured_database_url(ctx.obj.database_url, ctx.obj.config.database_url) is not None
    with out.status("starting PostgreSQL…"):
        url = ctx.obj.url()
    pipeline.run(url, external, seconds, ctx.obj.config.export_dir or data_dir() / "exports", ctx.obj.spool_root())
