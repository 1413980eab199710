"""What the command line prints: its two consoles, and the tables `status` and the demo show."""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from warehouse.collect.status import SourceStatus


class _Output(Console):
    def on_broken_pipe(self) -> None:
        """The reader closed our output (`| head`): the command line ends quietly with 141, as it does
        for every command (rich's own answer is to exit 1)."""
        raise BrokenPipeError(errno.EPIPE, "the reader of standard output closed it")


# Piped or under cron there is no terminal width to respect: never wrap a table row.
out = _Output(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """One error line on stderr. The message is shown as it is: `[[feeds]]` is text, not markup."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def warning(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def say(message: str, *, wrap: bool = True) -> None:
    """A line of plain output (paths, counts): never markup. `wrap=False`: one line whatever its length
    (a line a script reads, e.g. one problem each)."""
    out.print(escape(message), highlight=False, soft_wrap=not wrap)


def status_table(rows: list[SourceStatus]) -> Table | str:
    # Imported by the tables `status` prints, not at start-up: every other command would load the status
    # queries and prometheus_client for nothing (docs/development.md, the CLI's start-up).
    from warehouse.collect.status import duration

    if not rows:
        return "no source has sent anything yet"
    table = Table(title="sources", title_justify="left")
    for column in ("source", "last frame", "frames/min", "rows/min", "reconnects 24h", "unplanned gaps 24h",
                   "not listening 24h", "resyncs 24h", "quarantined 24h", "spool backlog"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for r in rows:
        age = "never" if r.last_frame_age_s is None else f"{duration(r.last_frame_age_s)} ago"
        unplanned = r.gaps_24h - r.planned_gaps_24h
        gaps = f"{unplanned} (+{r.planned_gaps_24h} planned)" if r.planned_gaps_24h else str(unplanned)
        table.add_row(escape(r.source), age, str(r.frames_last_minute), str(r.rows_last_minute),
                      str(r.reconnects_24h), gaps, duration(r.gap_seconds_24h), resyncs(r),
                      str(r.quarantined_24h), str(r.spool_backlog_frames))
    return table


def claims_table(rows: list[SourceStatus]) -> Table:
    """Who collects each feed (its claim's holder), since when, and who stands by for it."""
    from warehouse.collect.status import duration

    table = Table(title="claims", title_justify="left")
    for column in ("feed", "collected by", "since", "epoch", "standing by"):
        table.add_column(column, justify="right" if column == "epoch" else "left")
    for r in rows:
        claim = r.claim
        if claim is None:
            continue
        if claim.holder is None:
            held = f"nobody (released by {escape(claim.last_holder)})" if claim.last_holder else "nobody yet"
        elif claim.expires_in_s is not None and claim.expires_in_s < 0:
            held = (f"[yellow]{escape(claim.holder)}: not renewed for {duration(-claim.expires_in_s)} past its expiry"
                    " (killed, or cut off from the database)[/yellow]")
        else:
            held = escape(claim.holder)
        since = claim.since.strftime("%Y-%m-%d %H:%M:%S UTC") if claim.since else "–"
        standbys = ", ".join(escape(name) for name in claim.standbys) or "[yellow]none[/yellow]"
        table.add_row(escape(r.source), held, since, str(claim.epoch), standbys)
    return table


def resyncs(r: SourceStatus) -> str:
    """Resyncs of the last 24 hours: how many, the rows they healed, the calls that failed."""
    if not r.resyncs_24h and not r.resync_failures_24h:
        return "0"
    text = f"{r.resyncs_24h} ({r.resync_rows_24h:,} rows)"
    return text + (f" [yellow]{r.resync_failures_24h} calls failed[/yellow]" if r.resync_failures_24h else "")


def live_table(live: dict[str, dict[str, float]]) -> Table:
    """The counters of running collectors, from their /metrics."""
    from warehouse.collect.metrics import LATENCY_BUCKETS

    table = Table(title="running collector (since it started)", title_justify="left")
    columns = [("frames", "frames"), ("rows", "rows"), ("received_bytes", "bytes"),
               ("reconnect_attempts", "reconnect attempts"), ("quarantined", "quarantined"),
               ("resyncs", "resyncs"), ("commit_latency_p99_s", "p99 receive→commit"), ("database_up", "database"),
               ("claim_held", "claim")]
    table.add_column("source")
    for _, title in columns:
        table.add_column(title, justify="right")
    for source, values in sorted(live.items()):
        cells = []
        for key, _ in columns:
            value = values.get(key)
            if value is None:
                cells.append("–")
            elif key == "resyncs":
                cells.append(f"{value:,.0f}" + (" (running)" if values.get("resync_running") else ""))
            elif key == "commit_latency_p99_s":
                cells.append(f"≤ {value * 1000:g} ms" if value != float("inf") else f"> {LATENCY_BUCKETS[-1]:g} s")
            elif key == "claim_held":
                cells.append("held" if value else "standing by")
            elif key == "database_up":
                cells.append("up" if value else "down" if values.get("database_reached") else
                             "[red]never reached: check the URL[/red]")
            else:
                cells.append(f"{value:,.0f}")
        table.add_row(escape(source), *cells)
    return table


def query_result(names: list[str], rows: list[tuple[Any, ...]], output: str, types: Sequence[object] = ()) -> None:
    """Rows of `warehouse query`: a table for people (a record per row when a table would not fit),
    CSV or JSON (one object per row) for programs. Numbers are written as PostgreSQL writes them
    (`500`, not the lake decimal's `500.000000000000000000`; exact, as text in JSON), booleans
    true/false, times ISO 8601 in UTC. `types`: DuckDB's column types (a time the lake cannot hold is refused)."""
    import csv
    import json
    import sys

    _refuse_unfit_times(names, rows, types)
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_cell(v) for v in row] for row in rows)
    elif output == "json":
        print(json.dumps([dict(zip(names, map(_plain, row), strict=True)) for row in rows], ensure_ascii=False,
                         indent=1))
    else:
        cells = [[_cell(v) for v in row] for row in rows]
        if _table_width(names, cells) <= out.width:
            table = Table(show_lines=False)
            for name in names:
                table.add_column(escape(name), no_wrap=True)
            for row in cells:
                table.add_row(*map(escape, row))
            out.print(table)
        else:  # cut to fit, a table hides what it was asked for (18 columns of `id152398…`): one record per row
            _records(names, cells)
        out.print(f"{len(rows):,} row{'' if len(rows) == 1 else 's'}", highlight=False)


def _table_width(names: list[str], cells: list[list[str]]) -> int:
    """The width of the table with every cell whole: each column as wide as its widest line, plus the
    borders and padding (3 characters a column, 1 at the end)."""
    widths = [max([len(name), *(max(map(len, row[i].split("\n"))) for row in cells)]) for i, name in enumerate(names)]
    return sum(widths) + 3 * len(names) + 1


def _records(names: list[str], cells: list[list[str]]) -> None:
    """psql's expanded display: each row a block of `column | value` lines."""
    width = max(map(len, names), default=0)
    for number, row in enumerate(cells, 1):
        out.print(f"-[ row {number} ]" + "-" * max(0, width - len(str(number)) - 6), highlight=False, markup=False,
                  soft_wrap=True)
        for name, value in zip(names, row, strict=True):
            first, *more = value.split("\n")
            out.print(f"{name.ljust(width)} | {first}", highlight=False, markup=False, soft_wrap=True)
            for line in more:
                out.print(f"{' ' * width} | {line}", highlight=False, markup=False, soft_wrap=True)


def _refuse_unfit_times(names: list[str], rows: list[tuple[Any, ...]], types: Sequence[object]) -> None:
    """DuckDB hands ±infinity of a TIMESTAMPTZ to Python as a naive datetime.max or .min, and a time past
    year 9999 as text: a time the lake cannot hold is an error naming it, not a time printed as another."""
    from datetime import datetime

    zoned = [i for i, kind in enumerate(types) if str(kind) == "TIMESTAMP WITH TIME ZONE"]
    for row in rows if zoned else ():
        for i in zoned:
            value = row[i]
            if isinstance(value, str) or (isinstance(value, datetime) and value.tzinfo is None):
                infinite: dict[object, str] = {datetime.max: "infinity", datetime.min: "-infinity"}
                shown = infinite.get(value, str(value))
                raise ValueError(f"{names[i]} = {shown} is not a time the lake holds (a UTC time from year 1 to"
                                 f" 9999): leave such rows out (WHERE isfinite({names[i]})), or correct them as the"
                                 " table's owner")


def _cell(value: Any) -> str:
    """A value as one cell of text: lists and structs (steam_moves' movers…) as JSON."""
    import json

    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, list | dict):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def _plain(value: Any) -> Any:
    from datetime import date, datetime
    from decimal import Decimal
    from uuid import UUID

    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):  # the lake's DECIMAL(38, 18) pads every number to 18 decimals
        text = format(value, "f")  # not normalize(): it rounds to 28 digits
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
