"""The maintenance lock: `warehouse export` and `warehouse retain` of one warehouse never run at the same
time, wherever they run (issue 21 item 1).

A PostgreSQL advisory lock, so it holds across hosts: a job takes it at its start and keeps it, on
the connection it records through, until it ends (a killed job's session ends, and its lock with it).
The database holds the jobs to it: `warehouse_record_export` and `warehouse_drop_day` refuse a
session that does not hold it (migration 0009). What a job planned before it had the lock it checks
again under the lock.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg

KEY = (1870096384, 1)  # pg_advisory_lock(int, int): migration 0009's warehouse_holds_maintenance_lock()
_HOLDER = ("SELECT l.pid, a.application_name, a.usename FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid)"
           " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid"
           " AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
           " AND l.pid <> pg_backend_pid() LIMIT 1")
_LEAVING_S = 2.0


class Busy(RuntimeError):
    """Another export or retention of the same warehouse is running; the message says which and what to do."""


@contextlib.contextmanager
def maintenance(url: str, job: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection holding the warehouse's maintenance lock for `job` (`export`, `retain`), or Busy."""
    conn = psycopg.connect(url, autocommit=True, application_name=application_name(job))
    try:
        if not _take(conn):
            raise Busy(f"{holder(conn)} is running on this warehouse; export and retention run one at a time:"
                       f" wait for it to finish, then run `warehouse {job}` again")
        yield conn
        _release(conn, "SELECT pg_advisory_unlock(%s, %s)")
    finally:
        conn.close()  # the session ends: the lock goes with it, even when the release above did not run


def _take(conn: psycopg.Connection[Any]) -> bool:
    """Try the lock for up to _LEAVING_S. A session that has just closed (a job killed, or one whose
    release did not run) holds it until its backend has exited, which its client does not wait for:
    `export` then `retain` in one script must not find the warehouse busy."""
    deadline = time.monotonic() + _LEAVING_S
    while True:
        (taken,) = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", KEY).fetchone() or (False,)
        if taken or time.monotonic() >= deadline:
            return bool(taken)
        time.sleep(0.05)


def _release(conn: psycopg.Connection[Any], sql: str) -> None:
    """Release before closing, so the next job (often started right after this one) finds the lock free."""
    with contextlib.suppress(psycopg.Error):
        conn.execute(sql, KEY)


@contextlib.contextmanager
def shared(url: str, wait_s: float) -> Iterator[bool]:
    """For readers that must not see a job half way (verify-lake's second look): wait up to `wait_s`
    for no export or retention to run, and keep them out while inside. Yields whether it got there."""
    conn = psycopg.connect(url, autocommit=True, application_name=application_name("verify-lake"))
    try:
        conn.execute(f"SET lock_timeout = '{int(wait_s * 1000)}ms'")
        try:
            conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", KEY)
        except psycopg.errors.LockNotAvailable:
            yield False
            return
        yield True
        _release(conn, "SELECT pg_advisory_unlock_shared(%s, %s)")
    finally:
        conn.close()


def holder(conn: psycopg.Connection[Any]) -> str:
    """Who holds the lock, as a person reads it: `warehouse export` on host-a (pid 4242, role maintainer)."""
    row = conn.execute(_HOLDER, KEY).fetchone()
    if row is None:
        return "another export or retention"
    pid, name, role = row
    return f"{name or 'a session'} (pid {pid}{f', role {role}' if role else ''})"


def application_name(job: str) -> str:
    """What pg_stat_activity shows of a job: the command and its host (PostgreSQL keeps 63 bytes)."""
    return f"`warehouse {job}` on {socket.gethostname()}"[:63]
