"""Job runs: each finished run of `export`, `retain` and `verify-lake` and its result, in `job_runs`
(migration 0017).

Export and retention run as separate processes (cron, a systemd timer), often on another host than
the collectors. What they did is in `export_runs` and `retention_runs`; that they ran, and how it
ended, is here: one row per run, written when it ends. A collector's /metrics shows the newest of
each (`collect/metrics.py`) and `warehouse check` judges them (`health.py`), both reading the one
table the database already shares between hosts — no file on one host another cannot see.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from warehouse.lifecycle.lock import Busy
from warehouse.schema import JOBS

log = logging.getLogger("warehouse.lifecycle")

DETAIL_CHARS = 500


@dataclass(frozen=True)
class JobState:
    """The newest run of a job, and the newest that succeeded (None: never)."""

    job: str
    last_run_at: datetime | None
    last_ok: bool | None
    last_detail: str | None
    last_success_at: datetime | None


class Run:
    """One run of a job, recorded when it ends. The command sets `url` once it knows the database, and
    `failed(...)` or `done(...)` to say how it went; an exception leaving the block fails it."""

    def __init__(self, job: str) -> None:
        assert job in JOBS, job
        self.job = job
        self.url: str | None = None
        self.started_at = datetime.now(UTC)
        self.ok = True
        self.detail: str | None = None

    def done(self, detail: str) -> None:
        self.detail = detail

    def failed(self, detail: str) -> None:
        self.ok, self.detail = False, detail


@contextlib.contextmanager
def run(job: str) -> Iterator[Run]:
    """Record the run of `job` in job_runs when the block ends, however it ends (a failure with its reason)."""
    current = Run(job)
    try:
        yield current
    except KeyboardInterrupt:
        current.failed("interrupted")
        raise
    except Busy:  # it did not run: the job holding the maintenance lock is the run that counts
        current.url = None
        raise
    except BaseException as exc:
        code = getattr(exc, "exit_code", None)  # typer.Exit: the command chose its exit status
        if code is None:
            current.failed(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        elif code != 0 and current.ok:
            current.failed(f"exit status {code}")
        raise
    finally:
        if current.url is not None:
            record(current)


def record(done: Run) -> None:
    """Insert the run. A role that may not (verify-lake run as a reader) or a database gone away is
    logged, not raised: the job's own output and exit status already say how it went."""
    assert done.url is not None
    detail = " ".join((done.detail or "").split())[:DETAIL_CHARS] or None
    try:
        with psycopg.connect(done.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("INSERT INTO job_runs (job, started_at, ok, detail, host) VALUES (%s, %s, %s, %s, %s)",
                         (done.job, done.started_at, done.ok, detail, socket.gethostname()))
    except psycopg.errors.InsufficientPrivilege:
        log.info("%s ran as a role that may not record job runs (warehouse_maintainer may): not recorded", done.job)
    except psycopg.Error as exc:
        log.warning("could not record this %s run in job_runs (%s)", done.job, " ".join(str(exc).split())[:200])


_STATES = """
SELECT j.job, last.finished_at, last.ok, last.detail,
       (SELECT max(s.finished_at) FROM job_runs s WHERE s.job = j.job AND s.ok)
FROM unnest(%s::text[]) AS j(job)
LEFT JOIN LATERAL (SELECT r.finished_at, r.ok, r.detail FROM job_runs r WHERE r.job = j.job
                   ORDER BY r.finished_at DESC, r.id DESC LIMIT 1) AS last ON true
"""


def states(conn: psycopg.Connection[Any]) -> dict[str, JobState]:
    """Every job's newest run and newest success."""
    rows = conn.execute(_STATES, (list(JOBS),)).fetchall()
    return {job: JobState(job, at, ok, detail, success) for job, at, ok, detail, success in rows}
