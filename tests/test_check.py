"""`warehouse check`: one line per problem for cron and systemd, exit 0/1/2; and `job_runs`, where export,
retain and verify-lake leave their result for it and for /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import query, write_frames
from tests.test_roles import login
from warehouse.health import Limits, check
from warehouse.records import CollectorEvent, RawMessage
from warehouse.store.spool import Spool

CONFIG = """
[export]
dir = "lake"

[writer]
spool_dir = "spool/collector"

[[feeds]]
name = "oddspapi"
kind = "oddspapi-ws"
url = "ws://127.0.0.1:9/v4/ws"
api_key_env = "OP_KEY"

[[feeds]]
name = "saba"
kind = "saba-sse"
url = "http://127.0.0.1:9/sports/stream/v1/GetEvents"
token_env = "SABA_TOKEN"
"""


def warehouse(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WAREHOUSE_DATABASE_URL": url, "WAREHOUSE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "warehouse", "--config", str(tmp_path / "warehouse.toml"), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_check_says_each_problem_in_one_line_and_is_quiet_when_all_is_well(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "warehouse.toml").write_text(CONFIG)
    now = datetime.now(UTC)
    # oddspapi streams (and streamed yesterday); saba was cut off 19 minutes ago, not by a clean stop.
    write_frames(db_url, tmp_path / "w1", [(now - timedelta(days=1), []), (now - timedelta(seconds=2), [])], "oddspapi")
    write_frames(db_url, tmp_path / "w2", [(now - timedelta(minutes=20), [CollectorEvent(
        now - timedelta(minutes=19), "saba", None, "disconnect", {"reason": "connection reset by peer"})])], "saba")
    exported = warehouse(tmp_path, db_url, "export")
    assert exported.returncode == 0, exported.stderr
    lake_file = next((tmp_path / "lake" / "raw_messages").glob("day=*/part-0.parquet"))
    intact = lake_file.read_bytes()
    lake_file.write_bytes(intact + b"tampered")  # the lake no longer matches what the export recorded
    (tmp_path / "not-a-directory").write_text("")
    failed = warehouse(tmp_path, db_url, "export", "--dir", str(tmp_path / "not-a-directory"))
    assert failed.returncode == 2
    spool = Spool(tmp_path / "spool" / "collector")  # three saba frames a collector could not store
    spool.append(uuid.uuid4(), [(RawMessage(now, "saba", uuid.uuid4(), n, "frame", b"{}"), []) for n in (1, 2, 3)])
    spool.close()

    result = warehouse(tmp_path, db_url, "check")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["saba", "saba", "spool", "export", "lake"], lines
    assert lines[0].startswith("saba: silent for 20.") and "(limit 10.0m)" in lines[0]
    assert lines[1].startswith("saba: disconnected 19.") and "(connection reset by peer)" in lines[1]
    assert lines[2].startswith(f"spool: 3 frames of saba wait in {tmp_path / 'spool'}")
    assert lines[3].startswith("export: its last run failed (") and "not-a-directory" in lines[3]
    assert lines[4].startswith(f"lake: raw_messages {(now - timedelta(days=1)).date()}: ")
    assert result.stderr == ""
    # The runs the check judged, as job_runs holds them.
    assert query(db_url, "SELECT job, ok FROM job_runs ORDER BY id") == [("export", True), ("export", False)]

    # Put right: the spool replayed with saba streaming again, an export that works, the lake file back.
    write_frames(db_url, tmp_path / "spool" / "collector", [(datetime.now(UTC), [CollectorEvent(
        datetime.now(UTC), "saba", None, "connect", {})])], "saba")
    assert warehouse(tmp_path, db_url, "export").returncode == 0
    lake_file.write_bytes(intact)
    well = warehouse(tmp_path, db_url, "check")
    assert (well.returncode, well.stdout, well.stderr) == (0, "", "")  # under cron: nothing when all is well

    # The same check from Python: a job that has not succeeded within its limit is overdue.
    found = check(db_url, feeds=["oddspapi", "saba"], spool_root=tmp_path / "spool", lake=tmp_path / "lake",
                  retention=False, limits=Limits(job_age_s=1e-6), read_lake=False)
    assert len(found) == 1 and str(found[0]).startswith("export: last succeeded ")
    assert str(found[0]).endswith(" ago (limit 0.0s): is its nightly timer or cron entry running?")


def test_check_without_a_reachable_database_exits_2(tmp_path: Path) -> None:
    (tmp_path / "warehouse.toml").write_text(CONFIG)
    result = warehouse(tmp_path, "postgresql://nobody@127.0.0.1:9/nowhere?connect_timeout=2", "check")
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the database")


def test_retention_and_verify_lake_leave_their_runs_and_a_reader_leaves_none(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "warehouse.toml").write_text(CONFIG + "\n[retention]\nkeep_days = 2\n")
    assert warehouse(tmp_path, db_url, "retain").returncode == 0
    assert warehouse(tmp_path, login(db_url, "analyst", "warehouse_reader"), "verify-lake").returncode == 0
    maintainer = warehouse(tmp_path, login(db_url, "maintainer", "warehouse_maintainer"), "verify-lake")
    assert maintainer.returncode == 0, maintainer.stderr
    runs = query(db_url, "SELECT job, ok, detail FROM job_runs ORDER BY id")
    assert runs == [("retain", True, "dropped 0 days"), ("verify-lake", True, "0 table-days match their records")]
    # Retention is configured and succeeded: nothing overdue. Had it never run, it would be.
    assert check(db_url, feeds=[], spool_root=None, lake=tmp_path / "lake", retention=True, read_lake=False) == []


def test_a_job_that_never_ran_is_overdue_once_the_warehouse_is_older_than_its_limit(db_url: str,
                                                                                      tmp_path: Path) -> None:
    def overdue(retention: bool) -> list[str]:
        return [str(p) for p in check(db_url, feeds=[], spool_root=None, lake=tmp_path, retention=retention,
                                      limits=Limits(job_age_s=26 * 3600), read_lake=False)]

    write_frames(db_url, tmp_path / "w", [(datetime.now(UTC) - timedelta(hours=20), [])], "oddspapi")
    assert overdue(retention=True) == []  # a warehouse younger than the limit: nothing is due yet
    write_frames(db_url, tmp_path / "w", [(datetime.now(UTC) - timedelta(hours=30), [])], "oddspapi")
    line = "{}: never ran, and the warehouse holds frames older than 26.0h: schedule it (ops/systemd, ops/cron)"
    assert overdue(retention=False) == [line.format("export")]  # retention not configured: not expected
    assert overdue(retention=True) == [line.format("export"), line.format("retain")]
