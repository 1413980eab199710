"""The command line, run as a user runs it (a subprocess), against the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from tests.conftest import query
from warehouse.config import WriterSettings
from warehouse.records import CollectorEvent, Quarantine, RawMessage
from warehouse.store import migrate
from warehouse.store.embedded import EmbeddedPostgres
from warehouse.store.writer import Writer


def warehouse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_db_url_prints_the_configured_database(db_url: str) -> None:
    result = warehouse("db", "url", env={"WAREHOUSE_DATABASE_URL": db_url})
    assert result.returncode == 0
    assert result.stdout.strip() == db_url
    result = warehouse("--database-url", "postgresql://other/db", "db", "url", env={"WAREHOUSE_DATABASE_URL": db_url})
    assert result.stdout.strip() == "postgresql://other/db"


def test_demo_starts_the_embedded_server_migrates_and_reuses_it(tmp_path: Path) -> None:
    env = {"WAREHOUSE_DATA_DIR": str(tmp_path / "data")}
    try:
        before = warehouse("db", "url", "--demo", env=env)  # no demo yet: says so, and starts no server for it
        assert before.returncode == 2 and before.stderr.startswith("error: no demo database yet")
        assert "run `warehouse demo` first" in before.stderr and not (tmp_path / "data" / "postgres").exists()
        # a lake of before lakes were per database (the data directory's own exports/): the demo's is another
        legacy = tmp_path / "data" / "exports" / "price_ticks" / "day=2026-01-01" / "part-0.parquet"
        legacy.parent.mkdir(parents=True)
        legacy.write_bytes(b"PAR1 a warehouse's day")
        first = warehouse("demo", "--seconds", "4", env=env)  # long enough for every feed on a busy machine
        assert first.returncode == 0, first.stderr
        assert f"schema at revision {migrate.head_revision()}" in first.stdout
        assert 'export WAREHOUSE_DATABASE_URL="$(' in first.stdout and 'db url --demo)"' in first.stdout
        # the socket is in the data directory, or in a short one of its own when that path is too long for one
        socket_dir = EmbeddedPostgres(tmp_path / "data" / "postgres").socket_dir
        url = warehouse("db", "url", "--demo", env=env).stdout.strip()
        assert url == f"postgresql://postgres@/demo?host={socket_dir}"  # the demo's own database...
        assert warehouse("db", "url", env=env).stdout.strip() == f"postgresql://postgres@/warehouse?host={socket_dir}"
        assert query(warehouse("db", "url", env=env).stdout.strip(), "SELECT to_regclass('price_ticks')") == [(None,)]
        counts = dict(query(url, "SELECT source, count(*) FROM price_ticks GROUP BY 1"))
        assert set(counts) == {"oddspapi", "saba", "ckex"} and min(counts.values()) > 0
        assert query(url, "SELECT count(*) FROM raw_messages WHERE source = 'mm' AND kind = 'subscribed'") == [(1,)]
        assert (tmp_path / "data" / "exports" / "demo" / "price_ticks").is_dir()  # ...and its own lake
        # ...which every command reads once WAREHOUSE_DATABASE_URL names it; without, they say where it is
        status = warehouse("status", "--json", env={**env, "WAREHOUSE_DATABASE_URL": url})
        assert status.returncode == 0 and {s["source"] for s in json.loads(status.stdout)} == {"oddspapi", "saba",
                                                                                              "ckex", "mm"}
        mine = warehouse("status", env=env)
        assert mine.returncode == 2 and mine.stderr.count("\n") == 1
        assert mine.stderr.strip().endswith('for the demo\'s rows (in a database of their own): export'
                                            ' WAREHOUSE_DATABASE_URL="$(warehouse db url --demo)"')
        first_fixtures = query(url, "SELECT DISTINCT fixture_id FROM price_ticks")

        again = warehouse("demo", "--seconds", "3", env=env)  # the second run reuses the cluster, starts over
        assert again.returncode == 0 and f"schema at revision {migrate.head_revision()}" in again.stdout
        assert query(url, "SELECT count(*) FROM collector_events WHERE event = 'connect'") == [(4,)]
        assert not set(query(url, "SELECT DISTINCT fixture_id FROM price_ticks")) & set(first_fixtures)
        # so no simulator is asked about the first run's fixtures (they answered 404 to the resync)
        assert "404" not in again.stderr and "not found" not in again.stderr, again.stderr
        assert legacy.read_bytes() == b"PAR1 a warehouse's day"  # starting over never touched it
        refused = warehouse("demo", "--database-url", url, env=env)
        assert refused.returncode == 2 and refused.stderr.strip() == (
            "error: --database-url: the demo writes into a database of its own; add --into-warehouse to write into"
            " this one")
    finally:
        EmbeddedPostgres(tmp_path / "data" / "postgres").destroy()


def test_status_reports_age_rows_gaps_and_quarantine(db_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    conn = uuid4()

    async def write() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            await writer.put(None, [CollectorEvent(now - timedelta(seconds=40), "saba", conn, "connect"),
                                    CollectorEvent(now - timedelta(seconds=30), "saba", conn, "disconnect"),
                                    CollectorEvent(now - timedelta(seconds=20), "saba", conn, "connect"),
                                    CollectorEvent(now - timedelta(seconds=19), "saba", uuid4(), "resync_started",
                                                   {"reason": "reconnect"}),
                                    CollectorEvent(now - timedelta(seconds=15), "saba", uuid4(), "resync_finished",
                                                   {"rows": 120, "failed": 1, "refused": 2, "retry": 3}),
                                    CollectorEvent(now - timedelta(seconds=14), "saba", uuid4(), "resync_finished",
                                                   {"error": "cannot read what to fetch from the warehouse"}),
                                    CollectorEvent(now - timedelta(seconds=10), "saba", uuid4(), "resync_finished",
                                                   {"rows": 30, "failed": 0, "refused": 0, "retry": 0})])
            for seq in range(3):
                await writer.put(RawMessage(now - timedelta(seconds=5), "saba", conn, seq, "k", b"{}"), [])
            await writer.put(RawMessage(now - timedelta(seconds=5), "saba", conn, 3, "k", None),
                             [Quarantine(now, "saba", conn, "not JSON", "{")])

    asyncio.run(write())
    result = warehouse("--database-url", db_url, "status", "--json")
    assert result.returncode == 0, result.stderr
    (saba,) = json.loads(result.stdout)
    assert saba["source"] == "saba"
    assert 4 <= saba["last_frame_age_s"] < 60
    assert saba["frames_last_minute"] == 4
    assert saba["rows_last_minute"] == 0
    assert (saba["reconnects_24h"], saba["gaps_24h"]) == (1, 1)
    assert abs(saba["gap_seconds_24h"] - 10) < 0.01
    assert saba["quarantined_24h"] == 1
    assert (saba["resyncs_24h"], saba["resync_rows_24h"], saba["resync_failures_24h"]) == (3, 150, 4)
    assert datetime.fromisoformat(saba["last_resync_at"]) == now - timedelta(seconds=10)
    table = warehouse("--database-url", db_url, "status")
    assert "saba" in table.stdout and "quarantined" in table.stdout
    assert "resyncs" in table.stdout and "3 (150 rows) 4 calls failed" in " ".join(table.stdout.split())


def test_errors_are_one_line_with_what_to_do(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[databse]\n")
    result = warehouse("--config", str(bad), "status")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}: unknown key 'databse' in top level; allowed: collector," \
                                    " database, export, feeds, retention, writer"
    result = warehouse("--database-url", "postgresql://nobody@127.0.0.1:1/x", "status")
    assert result.returncode == 2 and "Connection refused" in result.stderr and "Traceback" not in result.stderr


def test_downgrade_needs_confirmation(db_url: str) -> None:
    result = warehouse("--database-url", db_url, "db", "downgrade")
    assert result.returncode == 2 and "--yes" in result.stderr
    assert query(db_url, "SELECT count(*) FROM alembic_version") == [(1,)]


def test_a_command_that_finds_no_schema_leaves_no_embedded_server_running(tmp_path: Path) -> None:
    """Issue 26 item 6: every command pointed at a new data directory used to create and start an embedded
    PostgreSQL, and leave it running after saying there was no schema."""
    data = tmp_path / "d"
    env = {"WAREHOUSE_DATA_DIR": str(data)}
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nname = "saba"\nkind = "saba-sse"\nurl = "http://127.0.0.1:9/s"\ntoken_env = "T"\n')
    server = EmbeddedPostgres(data / "postgres")
    commands = [["status"], ["export"], ["retain", "--keep-days", "2"], ["query", "SELECT 1"], ["plot"],
                ["replay", "--source", "saba", "--check"], ["--config", str(config), "collect"]]
    try:
        for command in commands:
            result = warehouse(*command, env={**env, "T": "a-long-token"})
            assert result.returncode == 2 and result.stderr.count("\n") == 1, (command, result.stderr)
            assert "`warehouse db upgrade` creates it" in result.stderr, command
        assert not server.is_initialised() and not data.exists()
        server.ensure_running()  # a cluster without the schema (`db start`), then stopped
        server.stop()
        for command in commands:
            result = warehouse(*command, env={**env, "T": "a-long-token"})
            assert result.returncode == 2 and "has no warehouse schema yet" in result.stderr, (command, result.stderr)
            assert not server.is_running(), command  # started to look, stopped again
        server.start()  # running before: left running
        assert warehouse("status", env=env).returncode == 2 and server.is_running()
    finally:
        server.destroy()


def test_help_lists_every_command_with_its_first_sentence_whole() -> None:
    """Issue 26 item 16: `warehouse -h` cut each command's help to the terminal's width with `...`."""
    for args, names in ((["-h"], ["status", "collect", "export", "retain", "query", "replay", "db"]),
                        (["db", "-h"], ["upgrade", "downgrade", "url", "start", "stop"])):
        listed = warehouse(*args, env={"COLUMNS": "80"}).stdout.split("Commands:")[1]
        assert "..." not in listed, listed
        assert all(f"\n  {name} " in listed for name in names), listed
    assert "ps -C postgres" in warehouse("db", "stop", "-h").stdout
