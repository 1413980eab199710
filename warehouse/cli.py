"""The `warehouse` command line: commands that parse their arguments and call the modules doing the work.

`--config` and `--database-url` are accepted before or after the subcommand (`warehouse collect
--config f.toml` and `warehouse --config f.toml collect` are the same). Errors a user can hit are
one line on stderr and exit status 2; Ctrl-C is exit status 130, within a second; a reader that
closes the output early (`| head`) ends the command quietly, with status 141 (128 + SIGPIPE).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from warehouse.config import Config, ConfigError, load_config
from warehouse.console import err, error, out, say, warning
from warehouse.lifecycle import jobs
from warehouse.lifecycle.jobs import Run
from warehouse.lifecycle.lock import Busy
from warehouse.store import migrate
from warehouse.store.database import (
    DEMO_DATABASE,
    configured_database_url,
    data_dir,
    demo_database,
    embedded_server,
    redact_url,
)
from warehouse.store.database import resolve_database_url as _resolve_url
from warehouse.store.duckdb import ExtensionMissing
from warehouse.store.embedded import EmbeddedError

if TYPE_CHECKING:
    from warehouse.lifecycle.bucket import Settings
    from warehouse.lifecycle.storage import Lake

_SETTINGS = {"help_option_names": ["-h", "--help"]}
DEMO_DAYS_MAX = 31  # `demo --days`: a month of history is plenty to try export and retention on


class _Group(typer.core.TyperGroup):
    """Lists each command with the first sentence of its help whole (click cuts it at the terminal's
    width, ending it with `...`), wrapped when long."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, command.get_short_help_str(limit=10_000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    help="odds-warehouse: record live sports-odds feeds into an append-only PostgreSQL warehouse.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings=_SETTINGS, cls=_Group,
)
db_app = typer.Typer(help="The database: migrations, URL, the embedded server.", no_args_is_help=True,
                     rich_markup_mode=None, context_settings=_SETTINGS, cls=_Group)
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file", show_default=False,
                                                   metavar="FILE")]
UrlOption = Annotated[str | None, typer.Option(
    "--database-url", help="PostgreSQL URL; default: $WAREHOUSE_DATABASE_URL, the config, else the embedded server",
    show_default=False, metavar="URL")]


@dataclass
class Context:
    """The options every command shares, given before or after the subcommand, and what they lead to."""

    verbose: bool = False
    config_path: Path | None = None
    database_url: str | None = None
    job: Run | None = None  # a job's run (export, retain, verify-lake), recorded in job_runs when it ends
    _config: Config | None = field(default=None, repr=False)

    def given(self, config_path: Path | None, database_url: str | None) -> None:
        """Options given after the subcommand; the same option given twice must agree."""
        self.config_path = _once("--config", self.config_path, config_path)
        self.database_url = _once("--database-url", self.database_url, database_url)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def url(self) -> str:
        return _resolve_url(self.database_url, self.config.database_url)

    def url_with_schema(self) -> str:
        """The database in use, after checking its schema is this version's (else one line saying what to do).
        The embedded server is not created for that, nor left running by a command that started it only
        to find no schema."""
        if self.configured_url() is not None:
            url = self.url()
            migrate.require_current(url)
        else:
            server = embedded_server()
            if not server.is_initialised():
                raise migrate.SchemaError(f"no warehouse in {data_dir()} yet (its embedded PostgreSQL is not"
                                          " created): `warehouse db upgrade` creates it, or give --database-url")
            started = not server.is_running()
            url = server.ensure_running()
            try:
                migrate.require_current(url)
            except migrate.SchemaError as exc:
                demo = migrate.current_revision(url) is None and _demo_ran()
                if started:
                    server.stop()
                if demo:
                    raise migrate.SchemaError(f"{exc}; or, for the demo's rows (in a database of their own): export"
                                              ' WAREHOUSE_DATABASE_URL="$(warehouse db url --demo)"') from None
                raise
        if self.job is not None:
            self.job.url = url  # where its run is recorded
        return url

    def job_result(self, detail: str, *, ok: bool = True) -> None:
        """What the job's run did (or why it failed), for job_runs."""
        if self.job is not None:
            (self.job.done if ok else self.job.failed)(detail)

    def spool_root(self) -> Path:
        from warehouse.store.homes import spool_root

        spool_dir = self.config.writer.spool_dir
        return spool_dir.parent if spool_dir else spool_root(self.configured_url())

    def export_dir(self) -> Path | str:
        """The lake: `[export] dir`, else the database's own folder in the data directory."""
        from warehouse.lifecycle.lakes import default_root

        return self.config.export_dir or default_root(self.configured_url())

    def lake(self, directory: str | None = None) -> Lake:
        """The lake given (--dir, --parquet: a directory or s3:// URL), else the configured one; a bucket with
        the AWS variables overridden by `[export] s3_*`."""
        from warehouse.lifecycle.storage import open_lake, root_of

        root = root_of(directory) if directory is not None else self.export_dir()
        return open_lake(root) if isinstance(root, Path) else open_lake(root, self.bucket_settings())

    def bucket_settings(self) -> Settings:
        """How to reach a bucket lake: the AWS variables, overridden by `[export] s3_*`."""
        from warehouse.lifecycle.bucket import Settings

        export = self.config.export
        return Settings.from_env(export.s3_endpoint, export.s3_region, export.s3_url_style)

    def configured_url(self) -> str | None:
        """The external database asked for, or None for the embedded one (not started by this)."""
        return configured_database_url(self.database_url, self.config.database_url)


def _demo_ran() -> bool:
    try:
        demo_database()
    except ValueError:
        return False
    return True


def _once(option: str, before: Any, after: Any) -> Any:
    if before is not None and after is not None and before != after:
        raise ConfigError(f"{option} is given twice with different values ({before} before the command, {after}"
                          " after it); give it once")
    return after if after is not None else before


def command(group: typer.Typer, name: str | None = None, context_settings: dict[str, Any] | None = None,
            *, duckdb: bool = False, job: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command that also takes --config and --database-url, and turns the errors a user can hit
    into one line on stderr (exit 2), Ctrl-C into exit 130 and a closed output into a quiet 141.
    `duckdb`: the command runs DuckDB queries, which see a Ctrl-C only between their tasks (minutes,
    on a big table): its work runs in a thread of its own, and Ctrl-C interrupts them. A `job` (export,
    retain, verify-lake) records each run and its result in job_runs, however it ends."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(ctx: typer.Context, *args: Any, config: Path | None = None, database_url: str | None = None,
                    **kwargs: Any) -> Any:
            obj = ctx.find_object(Context) or ctx.ensure_object(Context)
            try:
                obj.given(config, database_url)
                with jobs.run(job) if job else contextlib.nullcontext() as obj.job:
                    if duckdb:
                        return _interruptible(lambda: func(obj, *args, **kwargs))
                    return func(obj, *args, **kwargs)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except KeyboardInterrupt:
                err.print("interrupted", highlight=False)
                raise typer.Exit(130) from None
            except BrokenPipeError:
                if not _output_closed():
                    raise
                _discard_output()
                raise typer.Exit(128 + signal.SIGPIPE) from None
            except Exception as exc:
                _explain(exc, obj.verbose)
                raise typer.Exit(2) from None

        signature = inspect.signature(func, eval_str=True)
        parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        parameters += [p for p in signature.parameters.values() if p.name != "obj"]
        parameters += [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation=ConfigOption),
                       inspect.Parameter("database_url", inspect.Parameter.KEYWORD_ONLY, default=None,
                                         annotation=UrlOption)]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return group.command(name, context_settings=context_settings)(wrapper)

    return register


STOPS_WITHIN = 0.5  # seconds: after a Ctrl-C, how long work may take to stop before the process just ends


def _interruptible(work: Callable[[], Any]) -> Any:
    """`work()`, run in a thread while this one waits for it, so that a Ctrl-C is seen at once: it
    interrupts every DuckDB query of the process, and the command ends within a second — when `work`
    has not stopped by then, without waiting for it (an export is safe to end at any moment: it
    commits each file with a rename; a query writes nothing)."""
    from warehouse.store.duckdb import interrupt_all

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="command", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.25)
    except KeyboardInterrupt:
        interrupt_all()
        worker.join(STOPS_WITHIN)
        err.print("interrupted", highlight=False)
        out.show_cursor(True)  # a progress bar may have hidden it
        if not worker.is_alive():  # else it may hold stdout's lock: what it printed is lost, not waited for
            sys.stdout.flush()
        sys.stderr.flush()
        # Not an exception up to the interpreter's exit: DuckDB's threads, stopped mid-query, may abort it.
        os._exit(130)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _output_closed() -> bool:
    """Whether whoever read our standard output has closed it (`| head`): the pipe reports an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _discard_output() -> None:
    """Nobody reads the output any more: what is still buffered goes nowhere, and Python's own flush at
    exit does not complain about the broken pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _explain(exc: BaseException, verbose: bool) -> None:
    """One line saying what went wrong; the database hint only where it fits."""
    # Imported when there is an error to explain, not at start-up (each command imports what it uses).
    import psycopg
    import sqlalchemy.exc

    from warehouse.lifecycle.bucket import BucketError
    from warehouse.lifecycle.export import ExportError

    cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, ConfigError | EmbeddedError | ExtensionMissing | migrate.SchemaError | ValueError | Busy
                  | BucketError):
        error(str(cause))
    elif isinstance(cause, ExportError):  # one line per table-day that could not be exported
        for line in str(cause).splitlines():
            error(line)
    elif isinstance(cause, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction):
        error(f"the database has no warehouse schema, or an older one ({_first_line(cause)}); "
              "run `warehouse db upgrade` (with the same --database-url or --config)")
    elif isinstance(cause, psycopg.OperationalError | ConnectionError):
        error(f"cannot reach the database: {_first_line(cause)}")
        err.print("check the database URL (`warehouse db url`) and that the server is up", highlight=False)
    elif isinstance(cause, OSError):
        error(f"{cause.strerror or cause}: {cause.filename or ''}".rstrip(": "))
    else:
        error(f"{type(cause).__name__}: {_first_line(cause)}")
        if not verbose:
            err.print("run with --verbose for the traceback", highlight=False)
    if verbose:
        err.print("".join(traceback.format_exception(exc)), highlight=False, markup=False)


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _version(value: bool) -> None:
    if value:
        try:
            print(f"odds-warehouse {version('odds-warehouse')}")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
            print("odds-warehouse (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    database_url: UrlOption = None,
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more detail")] = False,
    _show_version: Annotated[bool, typer.Option("--version", help="print the version and exit", callback=_version,
                                                is_eager=True)] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = Context(verbose=verbose, config_path=config, database_url=database_url)


# -- db ---------------------------------------------------------------------------------------


@command(db_app, "upgrade")
def db_upgrade(obj: Context, revision: str = typer.Option("head", help="target revision", metavar="REV")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    url = obj.url()
    before = migrate.current_revision(url)
    migrate.upgrade(url, revision)
    after = migrate.current_revision(url)
    say(f"schema at revision {after} (was {before or 'empty'}) in {redact_url(url)}")


@command(db_app, "downgrade")
def db_downgrade(
    obj: Context,
    revision: str = typer.Option("base", help="target revision; base removes every table", metavar="REV"),
    yes: bool = typer.Option(False, "--yes", help="confirm: downgrading drops tables and their data"),
) -> None:
    """Undo migrations down to REVISION. Dropping tables loses their rows, so --yes is required."""
    if not yes:
        error("refusing to downgrade without --yes: it drops tables and every row in them")
        raise typer.Exit(2)
    url = obj.url()
    migrate.downgrade(url, revision)
    say(f"schema at revision {migrate.current_revision(url) or 'base (empty)'}")


@command(db_app, "url")
def db_url(obj: Context,
           demo: bool = typer.Option(False, "--demo", help="the demo's own database instead (what `warehouse demo`"
                                                           " wrote): export WAREHOUSE_DATABASE_URL=\"$(warehouse db"
                                                           " url --demo)\" points every command at it")) -> None:
    """Print the database in use (starts the embedded server if that is the one). Try `psql $(warehouse db url)`."""
    print(demo_database() if demo else obj.url())


@command(db_app, "start")
def db_start(obj: Context) -> None:
    """Start the embedded PostgreSQL (initialising it on first use)."""
    print(embedded_server().ensure_running())


@command(db_app, "stop")
def db_stop(obj: Context) -> None:
    """Stop the embedded PostgreSQL of the data directory (data stays; the next command that needs it starts it).

    It serves $WAREHOUSE_DATA_DIR/postgres (default: the per-user data directory). Every PostgreSQL
    running here, each with its data directory after -D: ps -C postgres -o pid,user,args | grep -- ' -D '"""
    server = embedded_server()
    if server.is_running():
        server.stop()
        say(f"stopped the embedded PostgreSQL in {server.data_dir}")
    else:
        say("the embedded PostgreSQL is not running")


# -- status -----------------------------------------------------------------------------------


@command(app)
def status(
    obj: Context,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    metrics_port: Annotated[list[int] | None, typer.Option(
        "--metrics-port", help="also read the counters of the collector running with this --metrics-port "
                               "(repeatable: one per collector process)", metavar="PORT")] = None,
) -> None:
    """Per source: last frame age, rows in the last minute, reconnects, gaps, quarantine, spool backlog; who
    collects it (its claim's holder), since when, and who stands by."""
    from warehouse.collect.metrics import scrape
    from warehouse.collect.status import source_status
    from warehouse.console import claims_table, live_table, status_table

    rows = source_status(obj.url_with_schema(), obj.spool_root())
    live: dict[str, dict[str, float]] = {}
    for port in metrics_port or []:
        try:
            for source, values in scrape(port).items():  # of several processes, the one holding the feed's claim
                if source not in live or values.get("claim_held"):
                    live[source] = values
        except OSError as exc:
            warning(f"no collector metrics on 127.0.0.1:{port} ({exc}); its feeds show from the database only")
    if as_json:
        print(json.dumps([r.as_json() | ({"collector": live[r.source]} if r.source in live else {})
                          for r in rows], indent=2))
        return
    out.print(status_table(rows))
    if any(row.claim for row in rows):
        out.print(claims_table(rows))
    if live:
        out.print(live_table(live))


# -- collect / simulate -----------------------------------------------------------------------


@command(app)
def collect(
    obj: Context,
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="serve Prometheus /metrics on "
                                            "127.0.0.1:PORT", metavar="PORT"),
    metrics_bind: str | None = typer.Option(None, "--metrics-bind", help="serve Prometheus /metrics on HOST:PORT"
                                            " (0.0.0.0:9101 for every interface, [::]:9101 for IPv6 too)",
                                            metavar="HOST:PORT"),
    feed: Annotated[list[str] | None, typer.Option("--feed", help="only this feed of the config (repeatable): "
                                                   "run busy feeds in processes of their own", metavar="NAME")] = None,
) -> None:
    """Run the config's feeds until stopped (SIGINT/SIGTERM: flush, record the disconnect, exit 0; SIGHUP: reload)."""
    from warehouse.collect.metrics import parse_bind
    from warehouse.collect.service import collect as run_collect
    from warehouse.collect.service import writer_identity
    from warehouse.collect.settings import feed_settings, only

    if metrics_port is not None and metrics_bind is not None:
        raise ValueError("give --metrics-bind HOST:PORT or --metrics-port PORT (127.0.0.1), not both")
    metrics_host, metrics_port = parse_bind(metrics_bind) if metrics_bind else ("127.0.0.1", metrics_port)
    config, selected = obj.config, feed or []
    feeds = only(feed_settings(config), selected, config)
    writer_name, writer_settings = writer_identity(selected, config.writer)
    try:
        url = obj.url_with_schema()  # a missing schema is a mistake to say now, not an outage to spool through
    except migrate.SchemaError:
        raise
    except Exception:  # not reachable now: the writer spools, and says so until it is
        url = obj.url()
    _log_at_least_info()
    asyncio.run(run_collect(url, feeds, writer_settings, collector=config.collector, writer_name=writer_name,
                            metrics_port=metrics_port, metrics_host=metrics_host,
                            reload=lambda: only(feed_settings(load_config(config.path)), selected, config)))


@command(app)
def simulate(obj: Context, seed: int = typer.Option(1, help="seed of the simulated markets", metavar="N")) -> None:
    """Run local simulators of the config's feeds, where their URLs point (127.0.0.1 only), until Ctrl-C or SIGTERM."""
    from warehouse.simulate import simulate as run_simulators

    _log_at_least_info()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_simulators(obj.config, os.environ, stop, seed=seed)

    asyncio.run(main())


def _log_at_least_info() -> None:
    """Long-running commands say what they are doing (connects, gaps, reconnects) on stderr."""
    logging.getLogger("warehouse").setLevel(min(logging.getLogger().level, logging.INFO))


# -- export -----------------------------------------------------------------------------------


def parse_day(option: str, text: str | None) -> date | None:
    """A UTC day as a user writes it: YYYY-MM-DD, `today` or `yesterday`."""
    if text is None:
        return None
    today = datetime.now(UTC).date()
    named = {"today": today, "yesterday": today - timedelta(days=1)}
    if text.strip().lower() in named:
        return named[text.strip().lower()]
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: expected a UTC day as YYYY-MM-DD, 'today' or 'yesterday'; got {text!r}") from None


@command(app, duckdb=True, job="export")
def export(
    obj: Context,
    day: str | None = typer.Option(None, help="export (again) this UTC day: YYYY-MM-DD, today (so far) or yesterday",
                                      metavar="DAY"),
    since: str | None = typer.Option(None, help="first UTC day to export (again)", metavar="DAY"),
    until: str | None = typer.Option(None, help="last UTC day to export (again)", metavar="DAY"),
    table: Annotated[list[str] | None, typer.Option("--table", help="only this table (repeatable)",
                                                    metavar="TABLE")] = None,
    directory: Annotated[str | None, typer.Option("--dir", help="export directory or s3://BUCKET/PREFIX (default:"
                                                                 " [export] dir of the config, else"
                                                                 " <data dir>/exports/<database>)",
                                                  metavar="DIR")] = None,
    copy_to: Annotated[str | None, typer.Option("--copy-to", help="instead: copy the lake (--dir, default [export]"
                                                                   " dir) to this s3://BUCKET/PREFIX, verify every"
                                                                   " object, and record that the days live there",
                                                metavar="URL")] = None,
) -> None:
    """Export complete UTC days to Parquet: by default every day not exported yet, for every fact table."""
    from rich.progress import Progress

    from warehouse.lake import EXPORT_TABLES
    from warehouse.lifecycle import layout
    from warehouse.lifecycle.export import run
    from warehouse.lifecycle.pending import pending

    root = obj.lake(directory)
    if copy_to is not None:
        _copy_lake(obj, root, copy_to)
        return
    names = tuple(table) if table else EXPORT_TABLES
    unknown = [t for t in names if t not in EXPORT_TABLES]
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r}; exported tables: {', '.join(EXPORT_TABLES)}")
    if day is not None and (since is not None or until is not None):
        raise ValueError("--day cannot be combined with --since/--until; use one or the other")
    first = parse_day("--day" if day else "--since", day or since)
    last = parse_day("--day" if day else "--until", day or until)
    if first is not None and last is not None and first > last:
        raise ValueError(f"--since {first} is after --until {last}: give the first day, then the last")
    url = obj.url_with_schema()
    _say_outside_window(url)
    # A day named explicitly may be today: exported as it is so far, and again once it is complete.
    named = day is not None or since is not None or until is not None
    work = pending(url, names, first, last, redo=named, today_too=day is not None or until is not None, lake=root)
    with Progress(console=out, transient=True, disable=not out.is_terminal) as progress:
        task = progress.add_task("exporting", total=len(work))

        def step(name: str, one_day: date) -> None:
            progress.update(task, description=f"{name} {one_day}", completed=work.index((name, one_day)))

        report = run(url, root, work, step)
    written = [e for e in report.done if not e.in_lake and not e.late]
    merged = [e for e in report.done if e.late]
    obj.job_result(f"exported {len(written)} table-days ({sum(e.rows for e in written)} rows)"
                   + (f"; merged late rows into {len(merged)}" if merged else ""))
    if written:  # under cron: one line when something was exported, nothing otherwise
        say(f"exported {len(written)} table-days ({sum(e.rows for e in written):,} rows) to {root}")
    for one_day in sorted({e.day for e in merged}):
        late = [e for e in merged if e.day == one_day]
        say(f"merged {sum(e.late for e in late):,} rows that arrived after retention moved {one_day} into its files"
            f" ({', '.join(e.table for e in late)}) in {root}, and moved them out of PostgreSQL")
    moved = sorted({e.day for e in report.done if e.in_lake} - {e.day for e in report.done if not e.in_lake})
    if moved:  # asked for by name: the day is not lost, it lives in the lake
        span = str(moved[0]) if len(moved) == 1 else f"{len(moved)} days ({moved[0]} … {moved[-1]})"
        say(f"{span} {'is' if len(moved) == 1 else 'are'} in the lake already: retention moved"
            f" {'it' if len(moved) == 1 else 'them'} out of PostgreSQL, and no rows arrived since"
            f" ({layout.SHAPE} in {root})")
    if out.is_terminal:
        today = datetime.now(UTC).date()
        if not report.done:
            say("nothing to export: " + ("no rows in the days asked for" if named else
                                         "every complete day is exported already"))
        if not named or (last is None or last >= today):
            say(f"today ({today}) is exported once it is complete; `warehouse export --day today` exports it so far")


def _copy_lake(obj: Context, source: Lake, copy_to: str) -> None:
    from warehouse.lifecycle.bucket import BucketError
    from warehouse.lifecycle.move import copy_lake
    from warehouse.lifecycle.storage import BucketLake, Directory

    target = obj.lake(copy_to)
    if not isinstance(target, BucketLake):
        raise ValueError(f"--copy-to takes a bucket (s3://BUCKET/PREFIX), not {copy_to}")
    if not isinstance(source, Directory):
        raise ValueError(f"--copy-to copies a lake directory; {source} is a bucket already")
    try:
        target.bucket.check()
    except BucketError as exc:
        raise ValueError(f"{exc}; nothing was copied") from None
    done = copy_lake(obj.url_with_schema(), source, target)
    say(f"copied {done.table_days} table-days ({done.bytes / 2**20:,.1f} MiB, {done.uploaded} uploaded now) from"
        f" {source} to {target}, each verified there (size, sha256, footer rows) and recorded;"
        f" {len(done.moved_days)} days retention moved live there now. Set [export] dir = \"{target}\" so that"
        " export, retain and verify-lake use it (the local lake is left as it was)")


def _say_outside_window(url: str) -> None:
    """Rows whose received_at the lake cannot hold (only a warehouse older than migration 0011 has any):
    never a day to export or retain, so said on every run rather than left unnoticed."""
    from warehouse.lifecycle.days import outside_window
    from warehouse.schema import RECEIVED_AT_END, RECEIVED_AT_FIRST

    for table, rows in outside_window(url).items():
        warning(f"{table} holds {rows:,} rows with received_at before {RECEIVED_AT_FIRST:%Y-%m-%d} or from"
                f" {RECEIVED_AT_END:%Y-%m-%d} on, which the lake cannot hold: they are never exported nor retained"
                " (docs/reliability.md, \"Times the lake holds\")")


# -- retain -----------------------------------------------------------------------------------


@command(app, job="retain")
def retain(
    obj: Context,
    keep_days: int | None = typer.Option(None, "--keep-days", help="keep this many UTC days (today included) in"
                                         " PostgreSQL; default: [retention] keep_days of the config", metavar="N"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be dropped and kept; drop nothing"),
) -> None:
    """Drop from PostgreSQL whole UTC days older than the days kept, once their Parquet export is verified.
    Exit 1 when a day is kept for another reason than not being exported yet."""
    from warehouse.lifecycle import retention
    from warehouse.lifecycle.verify import Verdict

    if dry_run:
        obj.job = None  # a question, not a run
    days = keep_days if keep_days is not None else obj.config.retention.keep_days
    if days is None:
        raise ValueError("no retention configured: give --keep-days N or set [retention] keep_days in the config")
    if days < 1:
        raise ValueError(f"--keep-days must be 1 or more, got {days}")
    url = obj.url_with_schema()
    _say_outside_window(url)
    first_kept = retention.cutoff(days)
    dropped: list[Verdict] = []
    failed = False
    for outcome in retention.retain(url, days, obj.lake(), dry_run=dry_run):
        verdict, day = outcome.verdict, outcome.verdict.day
        if outcome.failed and not failed:
            obj.job_result(f"kept {day}: {verdict.problem or _first_line(outcome.refused or Exception())}", ok=False)
        failed |= outcome.failed
        if verdict.problem is not None and verdict.pending:
            warning(f"kept {day}: {verdict.problem}; run `warehouse export --day {day}`, then retain again")
        elif verdict.problem is not None:
            warning(f"kept {day}: {verdict.problem}; the lake needs a look: `warehouse verify-lake --day {day}`")
        elif outcome.refused is not None:
            warning(f"kept {day}: {_first_line(outcome.refused).removeprefix('odds-warehouse: ')}")
        else:
            if dry_run:
                say(f"would drop {day}: {verdict.rows:,} rows, {verdict.bytes / 2**20:,.1f} MiB in PostgreSQL")
            dropped.append(verdict)
    if dropped and not dry_run:  # under cron: one line when something was dropped, nothing otherwise
        rows, size = sum(v.rows for v in dropped), sum(v.bytes for v in dropped)
        span = str(dropped[0].day) if len(dropped) == 1 else f"{dropped[0].day} … {dropped[-1].day}"
        say(f"dropped {len(dropped)} day{'s' if len(dropped) > 1 else ''} ({span}) from PostgreSQL: {rows:,} rows,"
            f" {size / 2**20:,.1f} MiB; their rows live in the Parquet export")
    elif not dropped and (dry_run or out.is_terminal):  # a dry run is asked by a person: it always answers
        say(f"nothing {'would be' if dry_run else 'was'} dropped: PostgreSQL holds no verified day before"
            f" {first_kept}")
    if dry_run:
        say(f"kept: {first_kept} and later ({days} UTC day{'s' if days > 1 else ''}, today included)")
    if not failed:
        obj.job_result(f"dropped {len(dropped)} days")
    if failed:
        raise typer.Exit(1)


@command(app, "verify-lake", job="verify-lake")
def verify_lake(
    obj: Context,
    day: str | None = typer.Option(None, help="only this UTC day: YYYY-MM-DD, today or yesterday", metavar="DAY"),
    directory: Annotated[str | None, typer.Option("--dir", help="the lake, a directory or s3://BUCKET/PREFIX"
                                                                 " (default: [export] dir of the config, else"
                                                                 " <data dir>/exports/<database>)",
                                                   metavar="DIR")] = None,
) -> None:
    """Read the lake again: every table-day against export_runs and retention_runs (size, footer rows, sha256).
    Exit 0 when all match, 1 with one line per problem."""
    from warehouse.lifecycle.audit import problems

    root = obj.lake(directory)
    audit = problems(obj.url_with_schema(), root, parse_day("--day", day))
    for problem in audit.problems:
        say(str(problem), wrap=False)
    if audit.problems:
        obj.job_result(f"{len(audit.problems)} problems, the first: {audit.problems[0]}", ok=False)
        raise typer.Exit(1)
    obj.job_result(f"{audit.table_days} table-days match their records")
    if out.is_terminal:  # under cron: quiet when all is well
        say(f"the lake {root} matches its records: {audit.table_days:,} table-days, {audit.rows:,} rows,"
            f" {audit.bytes / 2**20:,.1f} MiB")


@command(app)
def check(
    obj: Context,
    silent_after: float = typer.Option(600, "--silent-after", help="a feed with no frame for this many seconds is"
                                       " silent", metavar="SECONDS"),
    gap_after: float = typer.Option(120, "--gap-after", help="a feed disconnected (not by a clean stop) this many"
                                    " seconds without a new connection is a problem", metavar="SECONDS"),
    job_age: float = typer.Option(26, "--job-age", help="export (and retain, when configured) must have succeeded"
                                  " within this many hours", metavar="HOURS"),
    day: str | None = typer.Option(None, help="the lake's day to read again (default: yesterday, what the nightly"
                                              " export wrote)", metavar="DAY"),
    lake: bool = typer.Option(True, "--lake/--no-lake", help="read the lake's day again (--no-lake: a frequent"
                                                              " check leaves that to the nightly one)"),
) -> None:
    """Health check for cron and systemd: one line per problem (a feed silent or disconnected, a spool backlog,
    export or retention failed or overdue, the lake not matching its records). Exit 0 when all is well, 1 with
    problems, 2 when the check itself could not run (e.g. the database is unreachable)."""
    from warehouse.health import Limits
    from warehouse.health import check as run_check

    for option, value in (("--silent-after", silent_after), ("--gap-after", gap_after), ("--job-age", job_age)):
        if value <= 0:
            raise ValueError(f"{option} must be more than 0, got {value:g}")
    config = obj.config
    feeds = [feed.name for feed in config.feeds]
    if not feeds:
        raise ValueError("no [[feeds]] in the config: give --config with the feeds the warehouse collects, so the"
                         " check knows which must be streaming")
    found = run_check(obj.url_with_schema(), feeds=feeds, spool_root=obj.spool_root(), lake=obj.lake(),
                      retention=config.retention.keep_days is not None,
                      limits=Limits(silent_after, gap_after, job_age * 3600), lake_day=parse_day("--day", day),
                      read_lake=lake)
    for problem in found:
        say(str(problem), wrap=False)
    if found:
        raise typer.Exit(1)
    if out.is_terminal:  # under cron: quiet when all is well
        say(f"all well: {len(feeds)} feeds streaming, export{' and retention' if config.retention.keep_days else ''}"
            f" on time{', the lake matches its records' if lake else ''}")


# -- query ------------------------------------------------------------------------------------


# SQL that starts with a `-- comment` (as the README's examples do) is the query, not an option.
@command(app, context_settings={"ignore_unknown_options": True}, duckdb=True)
def query(
    obj: Context,
    sql: str = typer.Argument(..., help="one SQL statement that reads (DuckDB's dialect), over every table and"
                                        " analysis relation", metavar="SQL"),
    output: str = typer.Option("table", "--format", help="table (a record per row when too wide), csv or json",
                               metavar="FORMAT"),
    export_dir: Annotated[str | None, typer.Option(
        "--parquet", help="the Parquet export alone (a directory or s3://BUCKET/PREFIX), no database (default: the"
                          " warehouse: its days in PostgreSQL and those retention moved to Parquet)",
        metavar="DIR")] = None,
) -> None:
    """SQL over every day of the warehouse, each day read from one place (PostgreSQL or its Parquet export)."""
    import duckdb

    from warehouse.analysis import statement
    from warehouse.analysis.engine import Engine
    from warehouse.console import query_result

    if output not in ("table", "csv", "json"):
        raise ValueError(f"--format must be table, csv or json, got {output!r}")
    statement.readonly(duckdb.connect(), sql)  # empty, several statements, a write: said before connecting
    engine = Engine.export(obj.lake(export_dir)) if export_dir is not None \
        else Engine.warehouse(obj.url_with_schema(), obj.bucket_settings())
    try:
        names, rows, types = engine.read(sql)
    except duckdb.Error as exc:
        raise ValueError(f"the query failed: {_first_line(exc)}") from None
    query_result(names, rows, output, types)


# -- plot -------------------------------------------------------------------------------------


@command(app, duckdb=True)
def plot(
    obj: Context,
    fixture: str | None = typer.Option(None, help="fixture id (default: the market most bookmakers price, found by"
                                                  " reading every price: name it on a big warehouse)", metavar="ID"),
    market: str | None = typer.Option(None, help="market id (default: with --fixture, its busiest market)",
                                      metavar="ID"),
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="PNG to write (default: <data dir>/charts/line-<fixture>-<market>.png)", metavar="FILE")] = None,
    parquet_dir: Annotated[str | None, typer.Option(
        "--parquet", help="read this export directory (or s3://BUCKET/PREFIX) instead of PostgreSQL",
        metavar="DIR")] = None,
    consensus: str | None = typer.Option(None, help="also draw the consensus fair probability, the margin taken out"
                                                    " by this method: multiplicative, power or shin",
                                         metavar="METHOD"),
    arbitrage: float | None = typer.Option(None, help="shade the arbitrage windows with at least this edge"
                                                      " (0.01: the best prices sum below 99 %; 0: any)",
                                           metavar="EDGE"),
) -> None:
    """Chart the line movement of every outcome of one fixture's market across bookmakers."""
    from warehouse.analysis.engine import Engine
    from warehouse.analysis.plot import chart_market

    if out_file is not None and not out_file.parent.is_dir():
        raise ValueError(f"--out: the directory {out_file.parent} does not exist; create it or choose another path")
    engine = Engine.export(obj.lake(parquet_dir)) if parquet_dir is not None \
        else Engine.warehouse(obj.url_with_schema(), obj.bucket_settings())
    if out_file is None:
        charts = data_dir() / "charts"
        charts.mkdir(parents=True, exist_ok=True)  # our own data directory: created as needed
    chart = chart_market(engine, fixture, market, out_file, default_dir=data_dir() / "charts", consensus=consensus,
                         arbitrage=arbitrage)
    say(f"wrote {chart}")


# -- demo -------------------------------------------------------------------------------------


@command(app)
def demo(obj: Context,
         seconds: float = typer.Option(30.0, help="how long to collect, in seconds", metavar="SECONDS"),
         seed: int | None = typer.Option(None, help="seed of the simulated matches (default: new each run)",
                                         metavar="N"),
         days: int = typer.Option(0, "--days", min=0, max=DEMO_DAYS_MAX,
                                  help="first play N past days of simulated matches (a few seconds each), so"
                                       " export, retention and queries over cold days have history to work on",
                                  metavar="N"),
         into_warehouse: bool = typer.Option(False, "--into-warehouse",
                                             help="write into the database in use ($WAREHOUSE_DATABASE_URL, the"
                                                  " config's, or the embedded one), not the demo's own")) -> None:
    """The main job on local simulators, in a database of its own (`demo` on the embedded server, made
    again each run): migrations, simulators → collectors, Parquet, a chart."""
    from warehouse import demo as pipeline
    from warehouse.store.homes import folder_name

    if seconds <= 0:
        raise ValueError(f"--seconds must be more than 0, got {seconds:g}")
    if into_warehouse:
        external = configured_database_url(obj.database_url, obj.config.database_url) is not None
        with out.status("starting PostgreSQL…"):
            url = obj.url()
        target = pipeline.Target(url, "external database" if external else
                                 f"embedded PostgreSQL in {embedded_server().data_dir}", obj.lake(),
                                 obj.spool_root(), demo=False)
    else:
        if obj.database_url is not None:
            raise ValueError("--database-url: the demo writes into a database of its own; add --into-warehouse"
                             " to write into this one")
        with out.status("starting PostgreSQL…"):
            url = demo_database(fresh=True)
        # The demo's own lake and spool, emptied with its database: named outright, never a configured
        # [export] dir, nor the data directory's lake of before lakes were per database.
        home = folder_name(DEMO_DATABASE)
        target = pipeline.Target(url, f"database {DEMO_DATABASE} of the embedded PostgreSQL in"
                                      f" {embedded_server().data_dir}", data_dir() / "exports" / home,
                                 data_dir() / "spool" / home, demo=True)
        target.start_over()
    if not pipeline.run(target, seconds, seed, days):
        raise typer.Exit(130)


# -- replay -----------------------------------------------------------------------------------


def parse_user_time(option: str, text: str | None, *, end: bool = False) -> datetime | None:
    """A time as a user writes it: a UTC day (YYYY-MM-DD, today, yesterday: its start, or with `end` the
    end of it) or an ISO time (YYYY-MM-DDTHH:MM[:SS], UTC unless it names its offset)."""
    if text is None:
        return None
    try:
        day = parse_day(option, text)
    except ValueError:
        day = None
    if day is not None:
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1 if end else 0)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}: expected a UTC day (YYYY-MM-DD, today, yesterday) or a time"
                         f" (YYYY-MM-DDTHH:MM[:SS]); got {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@command(app)
def replay(
    obj: Context,
    source: str = typer.Option(..., "--source", help="the feed whose frames to replay (`source` in every row)",
                               metavar="NAME"),
    since: str | None = typer.Option(None, help="frames received from this time: a UTC day (YYYY-MM-DD, today,"
                                                " yesterday) or YYYY-MM-DDTHH:MM[:SS] (UTC unless it says)",
                                     metavar="T"),
    until: str | None = typer.Option(None, help="frames received before this time (a day: up to its end)",
                                     metavar="T"),
    from_parquet: Annotated[str | None, typer.Option(
        "--from-parquet", help="read the frames (and rows) from the Parquet export in DIR (or s3://BUCKET/PREFIX),"
                               " not from PostgreSQL",
        metavar="DIR")] = None,
    check_rows: bool = typer.Option(False, "--check", help="derive again and compare with what is stored; exit 0"
                                                          " when every row matches, 1 when not"),
    target: str | None = typer.Option(None, "--into", help="write the frames, and what today's adapters derive from"
                                                           " them, into this other migrated database", metavar="URL"),
    processes: int | None = typer.Option(None, "--processes", min=1, metavar="N",
                                         help="with --check: processes that derive, the connections shared out"
                                              " among them (default: one per core; 1 on a machine busy with"
                                              " other work)"),
) -> None:
    """Run stored raw frames through today's adapters: compare with what is stored, or rebuild elsewhere."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from warehouse.replay import ReplayIncomplete, check, into

    if check_rows == (target is not None):
        raise ValueError("give either --check (compare with what is stored) or --into URL (rebuild there)")
    if processes is not None and not check_rows:
        raise ValueError("--processes applies to --check only (--into derives in one process, in order)")
    start, end = parse_user_time("--since", since), parse_user_time("--until", until, end=True)
    url = None if from_parquet else obj.url_with_schema()
    lake = obj.lake(from_parquet) if from_parquet else None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=out, transient=True,
                  disable=not out.is_terminal) as progress:
        task = progress.add_task("replaying…")

        def step(day: datetime, frames: int) -> None:
            progress.update(task, description=f"replaying {source}: {day:%Y-%m-%d}, {frames:,} frames")

        if check_rows:
            report = check(source, start, end, url=url, export_dir=lake, config=obj.config, progress=step,
                           processes=processes)
            progress.stop()
            for line in report.lines():
                say(line)
            raise typer.Exit(0 if report.clean else 1)
        assert target is not None
        try:
            done = into(target, source, start, end, url=url, export_dir=lake, config=obj.config,
                        progress=step)
        except ReplayIncomplete as exc:
            progress.stop()
            error(str(exc))
            raise typer.Exit(2) from None
        progress.stop()
    for line in done.lines():
        say(line)
