"""`warehouse check`: is the warehouse doing its job right now? One line per problem, for cron and
systemd (exit 1 when there is any; the command line turns a check that could not run into exit 2).

It reads what the warehouse already records, nothing of its own: each feed's newest frame and its
connection events (`collect/status.py`), the spool's backlog file, the maintenance jobs' newest runs
(`job_runs`, `lifecycle/jobs.py`) and the lake against its records (`lifecycle/audit.py`, the API of
`warehouse verify-lake`). The limits are the command's options; docs/monitoring.md says which
Prometheus alert watches the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from warehouse.collect.status import duration
from warehouse.lifecycle.audit import problems as lake_problems
from warehouse.lifecycle.jobs import JobState, states
from warehouse.lifecycle.storage import Lake
from warehouse.records import EVENT_CONNECT, EVENT_DISCONNECT, SHUTDOWN
from warehouse.store.spool import read_backlog


@dataclass(frozen=True)
class Limits:
    silent_s: float = 600.0  # a feed with no frame for this long is silent
    gap_s: float = 120.0  # an unplanned gap open this long (reconnects normally close one in seconds)
    job_age_s: float = 26 * 3600.0  # a nightly job that has not succeeded for this long is overdue


@dataclass(frozen=True)
class Problem:
    subject: str  # a feed, `spool`, a job (`export`, `retain`, `verify-lake`) or `lake`
    what: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.what}"


# The newest connect or disconnect of each source: a disconnect that no connect followed is a gap still open.
_LAST_LIFECYCLE = """
SELECT s.source, e.event, e.received_at, e.detail->>'reason'
FROM unnest(%s::text[]) AS s(source)
JOIN LATERAL (SELECT event, received_at, detail FROM collector_events c WHERE c.source = s.source
              AND c.event IN (%s, %s) ORDER BY c.received_at DESC LIMIT 1) AS e ON true
"""
_NEWEST_FRAME = "SELECT max(received_at) FROM raw_messages WHERE source = %s"
_HELD_SINCE = "SELECT EXISTS (SELECT 1 FROM raw_messages WHERE received_at < %s)"


def check(url: str, *, feeds: list[str], spool_root: Path | None, lake: Path | Lake, retention: bool,
          limits: Limits = Limits(), lake_day: date | None = None, read_lake: bool = True) -> list[Problem]:
    """Every problem found, in a stable order: feeds, spool, jobs, lake. `feeds`: the sources that must
    be collected (the config's); `retention`: whether retention is configured (else a retain that never
    ran is no problem); `lake_day`: the lake's table-days compared (default: yesterday, last night's export;
    `read_lake` False: none)."""
    found: list[Problem] = []
    with psycopg.connect(url, autocommit=True) as conn:
        now: datetime = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        found += _feeds(conn, now, feeds, limits)
        found += _spool(spool_root)
        found += _jobs(conn, now, states(conn), retention, limits)
    if read_lake:
        day = lake_day or (now.astimezone(UTC).date() - timedelta(days=1))
        found += [Problem("lake", str(p)) for p in lake_problems(url, lake, day).problems]
    return found


def _feeds(conn: psycopg.Connection[Any], now: datetime, feeds: list[str], limits: Limits) -> list[Problem]:
    found = []
    lifecycle = {source: (event, at, reason) for source, event, at, reason in
                 conn.execute(_LAST_LIFECYCLE, (feeds, EVENT_CONNECT, EVENT_DISCONNECT)).fetchall()}
    for source in feeds:
        newest = conn.execute(_NEWEST_FRAME, (source,)).fetchone()[0]  # type: ignore[index]
        if newest is None:
            found.append(Problem(source, "never sent a frame: is a collector running it (`warehouse status`)?"))
        elif (now - newest).total_seconds() > limits.silent_s:
            found.append(Problem(source, f"silent for {duration((now - newest).total_seconds())} (limit"
                                         f" {duration(limits.silent_s)}): is its collector running and connected?"))
        event, at, reason = lifecycle.get(source, (None, None, None))
        if event == EVENT_DISCONNECT and reason != SHUTDOWN and (now - at).total_seconds() > limits.gap_s:
            found.append(Problem(source, f"disconnected {duration((now - at).total_seconds())} ago and not"
                                         f" connected since ({reason}): see the collector's log"))
    return found


def _spool(spool_root: Path | None) -> list[Problem]:
    backlog = read_backlog(spool_root) if spool_root is not None else {}
    return [Problem("spool", f"{frames:,} frames of {source} wait in {spool_root}: the database was (or is)"
                             " unreachable; a running collector stores them once it reaches it")
            for source, frames in sorted(backlog.items()) if frames]


def _jobs(conn: psycopg.Connection[Any], now: datetime, jobs: dict[str, JobState], retention: bool,
          limits: Limits) -> list[Problem]:
    found = []
    for job in ("export", "retain", "verify-lake"):
        state = jobs[job]
        if state.last_ok is False:
            found.append(Problem(job, f"its last run failed ({duration((now - state.last_run_at).total_seconds())}"
                                      f" ago): {state.last_detail}; run `warehouse {job}` to see it again"
                                 if state.last_run_at else f"its last run failed: {state.last_detail}"))
            continue
        expected = job == "export" or (job == "retain" and (retention or state.last_run_at is not None))
        if not expected:
            continue
        if state.last_success_at is not None:
            age = (now - state.last_success_at).total_seconds()
            if age > limits.job_age_s:
                found.append(Problem(job, f"last succeeded {duration(age)} ago (limit {duration(limits.job_age_s)}):"
                                          " is its nightly timer or cron entry running?"))
        elif conn.execute(_HELD_SINCE, (now - timedelta(seconds=limits.job_age_s),)).fetchone()[0]:  # type: ignore[index]
            found.append(Problem(job, f"never ran, and the warehouse holds frames older than"
                                      f" {duration(limits.job_age_s)}: schedule it (ops/systemd, ops/cron)"))
    return found
