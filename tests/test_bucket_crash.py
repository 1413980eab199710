"""The export to a bucket killed (SIGKILL) at every step, a first export of a day and a re-export of it:
read at that moment and after the kill, the day is there once (or, before the upload, absent / its
previous object whole), never half; the next run completes it, as export_runs records it (issue 25).
The S3 server and helpers: tests/test_bucket.py."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import query
from tests.s3server import Server
from tests.test_bucket import reader
from tests.test_export_crash import COMMITTED, kill, paused_command
from tests.test_retention import OLD
from tests.test_retention import fill as retention_fill
from warehouse.lifecycle import layout
from warehouse.lifecycle.export import STEPS
from warehouse.lifecycle.storage import BucketLake


@pytest.mark.parametrize("step", STEPS)
def test_an_export_to_a_bucket_killed_at_any_step_shows_a_day_once_and_the_next_run_completes_it(
        db_url: str, aws: Server, prefix: str, tmp_path: Path, step: str) -> None:
    root, day = aws.url(prefix), OLD[0]
    retention_fill(db_url, tmp_path, [day])
    url = layout.location(root, "price_ticks", day)
    args = ["--database-url", db_url, "export", "--dir", root, "--table", "price_ticks", "--day", str(day)]
    con = reader(aws)

    def rows_seen() -> int | None:
        """The day's rows a reader sees now (None: no object)."""
        if not BucketLake(root).locations("price_ticks"):
            return None
        return int(con.execute(f"SELECT count(*) FROM read_parquet('{root}/price_ticks/*/*.parquet')").fetchone()[0])

    # a first export, killed: before the upload there is no object; after, the whole day
    export = paused_command(step, args)
    first = rows_seen()
    kill(export)
    assert first == rows_seen() == (3 if step in COMMITTED else None)
    # a re-export with a late row, killed: the previous object whole, or the new one whole
    assert subprocess.run([sys.executable, "-m", "warehouse", *args], capture_output=True, timeout=120).returncode == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO price_ticks (received_at, source, bookmaker, fixture_id, market_id, outcome_id,"
                     " price) VALUES (%s, 'op', 'b', 'f', 'm', 'o', 9.5)",
                     (datetime(day.year, day.month, day.day, 22, tzinfo=UTC),))
    export = paused_command(step, args)
    second = rows_seen()
    kill(export)
    assert second == rows_seen() == (4 if step in COMMITTED else 3)
    # the next run completes it: one object, as export_runs recorded it last
    assert subprocess.run([sys.executable, "-m", "warehouse", *args], capture_output=True, timeout=120).returncode == 0
    assert BucketLake(root).locations("price_ticks") == [url] and rows_seen() == 4
    ((size, digest),) = query(db_url, "SELECT bytes, sha256 FROM export_runs WHERE path = %s ORDER BY id DESC LIMIT 1",
                              url)
    head = BucketLake(root).bucket.head(url)
    assert head is not None and (head.bytes, head.sha256) == (size, digest)
