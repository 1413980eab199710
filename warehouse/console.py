"""What the command line prints: its two consoles, and the tables `status` and the demo show."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from warehouse.collect.metrics import LATENCY_BUCKETS
from warehouse.collect.status import SourceStatus

# Piped or under cron there is no terminal width to respect: never wrap a table row.
out = Console(width=None if sys.stdout.isatty() else 200)
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


def resyncs(r: SourceStatus) -> str:
    """Resyncs of the last 24 hours: how many, the rows they healed, the calls that failed."""
    if not r.resyncs_24h and not r.resync_failures_24h:
        return "0"
    text = f"{r.resyncs_24h} ({r.resync_rows_24h:,} rows)"
    return text + (f" [yellow]{r.resync_failures_24h} calls failed[/yellow]" if r.resync_failures_24h else "")


def live_table(live: dict[str, dict[str, float]]) -> Table:
    """The counters of running collectors, from their /metrics."""
    table = Table(title="running collector (since it started)", title_justify="left")
    columns = [("frames", "frames"), ("rows", "rows"), ("received_bytes", "bytes"),
               ("reconnect_attempts", "reconnect attempts"), ("quarantined", "quarantined"),
               ("resyncs", "resyncs"), ("commit_latency_p99_s", "p99 receive→commit"), ("database_up", "database")]
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
            elif key == "database_up":
                cells.append("up" if value else "down" if values.get("database_reached") else
                             "[red]never reached: check the URL[/red]")
            else:
                cells.append(f"{value:,.0f}")
        table.add_row(escape(source), *cells)
    return table


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def query_result(names: list[str], rows: list[tuple[Any, ...]], output: str, types: Sequence[object] = ()) -> None:
    """Rows of `warehouse query`: a table for people, CSV or JSON (one object per row) for programs.
    Decimals stay exact (as text in JSON), times are ISO 8601 in UTC. `types`: DuckDB's column types."""
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
        table = Table(show_lines=False)
        for name in names:
            table.add_column(escape(name))
        for row in rows:
            table.add_row(*(escape(_cell(v)) for v in row))
        out.print(table)
        out.print(f"{len(rows):,} row{'' if len(rows) == 1 else 's'}", highlight=False)


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
    if isinstance(plain, list | dict):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def _plain(value: Any) -> Any:
    from datetime import date, datetime
    from decimal import Decimal
    from uuid import UUID

    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
