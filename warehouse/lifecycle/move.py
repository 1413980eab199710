"""Moving a lake off the box: `warehouse export --copy-to s3://BUCKET/PREFIX` (issue 25).

Every table-day whose latest record (the latest `export_runs` row, or the latest `retention_runs` row of
a day retention moved) names a file of the local lake is checked there first (the footer's rows and the
sha256 recorded), uploaded to the bucket in one step with its sha256 (skipped when the bucket holds it
already: a run killed half-way is simply run again), checked in the bucket (HEAD: size and stored
sha256; the footer's rows), then recorded: a new `export_runs` row with the object's URL and, for a day
retention moved, a new `retention_runs` row saying it lives there now (warehouse_record_move, migration
0015). Both tables stay append-only; every reader takes the latest row, so from then on retention, the
query surface and verify-lake use the bucket — once `[export] dir` names it. Nothing is deleted from
the local lake. Holds the maintenance lock (no export or retention beside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from warehouse.lifecycle.bucket import BucketError
from warehouse.lifecycle.export import RECORD, ExportError
from warehouse.lifecycle.lock import maintenance
from warehouse.lifecycle.storage import BucketLake, Directory
from warehouse.records import ExportRun

_LATEST = ("SELECT DISTINCT ON (table_name, day) table_name, day, rows, bytes, path, sha256 FROM {table}"
           " WHERE path IS NOT NULL ORDER BY table_name, day, {at} DESC, id DESC")


@dataclass
class Copied:
    table_days: int = 0
    uploaded: int = 0  # the others were in the bucket already (a run killed half-way, run again)
    bytes: int = 0
    moved_days: set[date] = field(default_factory=set)  # days retention moved: their new retention_runs rows


def copy_lake(url: str, source: Directory, target: BucketLake) -> Copied:
    """Copy every recorded file of the lake `source` to the bucket `target`, verified, and switch the records."""
    done = Copied()
    failed: list[str] = []
    with maintenance(url, "export") as conn:
        source.tie(conn)
        target.tie(conn)
        retained = {(t, d): (rows, size, path, digest) for t, d, rows, size, path, digest in conn.execute(
            _LATEST.format(table="retention_runs", at="dropped_at")).fetchall()}
        exported = {(t, d): (rows, size, path, digest) for t, d, rows, size, path, digest in conn.execute(
            _LATEST.format(table="export_runs", at="finished_at")).fetchall()}
        for (table, day), record in sorted({**exported, **retained}.items()):
            rows, _, path, digest = record
            if not source.is_own(table, day, path):
                continue  # elsewhere already (a bucket), or another lake's
            try:
                _copy(conn, source, target, table, day, int(rows), path, digest, done)
            except (ExportError, BucketError, psycopg.Error) as exc:
                failed.append(f"{table} {day}: {' '.join(str(exc).split())[:300]}")
                continue
            if (table, day) in retained:
                conn.execute("SELECT warehouse_record_move(%s, %s)", (table, day))
                done.moved_days.add(day)
    if failed:
        raise ExportError("\n".join(f"{line}; not copied — run the copy again" for line in failed))
    return done


def _copy(conn: psycopg.Connection[Any], source: Directory, target: BucketLake, table: str, day: date, rows: int,
          path: str, digest: str, done: Copied) -> None:
    started = datetime.now(UTC)
    found = source.facts(path)
    if found is None or found.rows != rows or not source.unchanged(path, digest):
        raise ExportError(f"the local file {path} is not the one recorded ({rows:,} rows, its sha256): run"
                          f" `warehouse verify-lake --day {day}`")
    location = target.location(table, day)
    if not target.unchanged(location, digest):
        target.commit(Path(path), location, digest)  # an upload: the local file stays
        done.uploaded += 1
    copied = target.facts(location)
    if copied is None or copied.bytes != found.bytes or copied.rows != rows or not target.unchanged(location, digest):
        raise ExportError(f"the object {location} does not match {path} after the upload")
    conn.execute(RECORD, ExportRun(table, day, rows, found.bytes, location, digest, started, datetime.now(UTC)))
    done.table_days += 1
    done.bytes += found.bytes
