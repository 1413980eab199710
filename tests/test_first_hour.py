"""A new user's first hour (issue 17): the command line as a user runs it, and what it says back."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.conftest import query
from warehouse.config import ConfigError, WriterSettings, config_from_text, resolve_secrets
from warehouse.records import CollectorEvent
from warehouse.store import connection
from warehouse.store.embedded import EmbeddedPostgres
from warehouse.store.writer import Writer


def warehouse(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_config_and_database_url_are_taken_before_or_after_the_subcommand(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text('[database]\nurl = "postgresql://from-config/db"\n')
    assert warehouse("db", "url", "--database-url", "postgresql://after/db").stdout.strip() == \
        "postgresql://after/db"
    assert warehouse("--database-url", "postgresql://before/db", "db", "url").stdout.strip() == \
        "postgresql://before/db"
    assert warehouse("db", "url", "--config", str(config)).stdout.strip() == "postgresql://from-config/db"
    assert warehouse("-c", str(config), "db", "url").stdout.strip() == "postgresql://from-config/db"
    same = warehouse("--database-url", "postgresql://x/db", "db", "url", "--database-url", "postgresql://x/db")
    assert same.returncode == 0 and same.stdout.strip() == "postgresql://x/db"
    twice = warehouse("--database-url", "postgresql://a/db", "db", "url", "--database-url", "postgresql://b/db")
    assert twice.returncode == 2
    assert twice.stderr.strip() == ("error: --database-url is given twice with different values (postgresql://a/db"
                                    " before the command, postgresql://b/db after it); give it once")


def test_bracketed_names_are_printed_as_written(tmp_path: Path) -> None:
    config = tmp_path / "w.toml"
    config.write_text('[writer]\nbatch_rows = "many"\n')
    result = warehouse("status", "--config", str(config))
    assert result.returncode == 2
    assert "'batch_rows' in [writer] must be an integer" in result.stderr
    config.write_text('[[feeds]]\nname = "x"\nkind = "nope"\n')
    assert "[[feeds]] #1 (x) has unknown kind 'nope'" in warehouse("status", "-c", str(config)).stderr
    (tmp_path / "empty.toml").write_text("")
    assert "no [[feeds]] to collect" in warehouse("collect", "-c", str(tmp_path / "empty.toml")).stderr


def test_a_database_without_the_schema_says_to_run_db_upgrade(empty_db_url: str, tmp_path: Path) -> None:
    for args in (["status"], ["export", "--dir", str(tmp_path / "x")], ["plot"]):
        result = warehouse(*args, "--database-url", empty_db_url)
        assert result.returncode == 2, args
        assert "has no warehouse schema yet; create it with `warehouse db upgrade`" in result.stderr, args
        assert "server is up" not in result.stderr and "UndefinedTable" not in result.stderr, args
    assert not (tmp_path / "x").exists()
    refused = warehouse("db", "downgrade", "--database-url", empty_db_url)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: refusing to downgrade without --yes: it drops tables and every row in them"


def test_an_older_schema_is_named_with_what_to_do(empty_db_url: str) -> None:
    assert warehouse("db", "upgrade", "--revision", "0002", "--database-url", empty_db_url).returncode == 0
    result = warehouse("status", "--database-url", empty_db_url)
    assert result.returncode == 2 and "is at revision 0002; this version needs" in result.stderr


def test_export_says_what_it_skipped_on_a_terminal_and_takes_named_days(db_url: str, tmp_path: Path) -> None:
    terminal = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "200"}
    result = warehouse("export", "--dir", str(tmp_path / "x"), "--database-url", db_url, env=terminal)
    assert result.returncode == 0, result.stderr
    assert "nothing to export: every complete day is exported already" in result.stdout
    assert "`warehouse export --day today` exports it so far" in result.stdout
    quiet = warehouse("export", "--dir", str(tmp_path / "x"), "--database-url", db_url)  # cron: no terminal
    assert quiet.returncode == 0 and quiet.stdout == ""
    for named in ("yesterday", "today", "Today", datetime.now(UTC).date().isoformat()):
        assert warehouse("export", "--day", named, "--dir", str(tmp_path / "x"), "--database-url", db_url
                         ).returncode == 0, named
    bad = warehouse("export", "--day", "tomorrowish", "--database-url", db_url)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: --day: expected a UTC day as YYYY-MM-DD, 'today' or 'yesterday'; got"
                                  " 'tomorrowish'")
    backwards = warehouse("export", "--since", "2026-12-05", "--until", "2026-12-01", "--database-url", db_url)
    assert backwards.returncode == 2
    assert backwards.stderr.strip() == ("error: --since 2026-12-05 is after --until 2026-12-01: give the first day,"
                                        " then the last")


def test_version_short_help_and_flags_shown_as_flags() -> None:
    from importlib.metadata import version

    assert warehouse("--version").stdout.strip() == f"odds-warehouse {version('odds-warehouse')}"
    short, long = warehouse("status", "-h"), warehouse("status", "--help")
    assert short.returncode == 0 and short.stdout == long.stdout
    assert "--json " in short.stdout and "<bool>" not in short.stdout
    assert "--metrics-port PORT" in short.stdout and "--config FILE" in short.stdout


def test_demo_refuses_a_negative_time_and_ctrl_c_stops_it_saying_what_was_kept(tmp_path: Path) -> None:
    env = {**os.environ, "WAREHOUSE_DATA_DIR": str(tmp_path / "data")}
    bad = warehouse("demo", "--seconds", "-5", env=env)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --seconds must be more than 0, got -5"
    try:
        demo = subprocess.Popen([sys.executable, "-m", "warehouse", "demo", "--seconds", "120"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        url = EmbeddedPostgres(tmp_path / "data" / "postgres").url("demo")
        while time.monotonic() < deadline:  # collecting: frames are arriving
            time.sleep(0.5)
            try:
                if query(url, "SELECT count(*) FROM raw_messages")[0][0] > 50:
                    break
            except Exception:
                continue
        demo.send_signal(signal.SIGINT)
        stdout, stderr = demo.communicate(timeout=60)
        assert demo.returncode == 130, stderr
        assert "stopped by Ctrl-C after" in stdout and "frames collected are kept" in stdout
        assert "ready in" not in stdout and "exported" not in stdout
        assert query(url, "SELECT count(*) FROM collector_events WHERE event = 'disconnect'"
                          " AND detail->>'reason' = 'shutdown'")[0][0] >= 4
    finally:
        EmbeddedPostgres(tmp_path / "data" / "postgres").destroy()


def test_plot_writes_where_asked_or_into_the_data_dir_and_creates_nothing_unasked(db_url: str,
                                                                                   tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for seconds, price in ((0, 2.0), (10, 2.2)):
            conn.execute("INSERT INTO price_ticks (received_at, source, bookmaker, fixture_id, market_id, outcome_id,"
                         " price) VALUES (%s, 'op', 'b', 'f', 'm', 'o', %s)", (now - timedelta(seconds=seconds), price))
    env = {"WAREHOUSE_DATA_DIR": str(tmp_path / "data")}
    missing = warehouse("plot", "--out", str(tmp_path / "no" / "such" / "x.png"), "--database-url", db_url, env=env)
    assert missing.returncode == 2 and "--out: the directory" in missing.stderr
    assert not (tmp_path / "no").exists()
    plain = subprocess.run([sys.executable, "-m", "warehouse", "plot", "--database-url", db_url], cwd=tmp_path,
                           capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "data" / "charts" / "line-f-m.png").is_file()
    assert not list(tmp_path.glob("*.png")), "nothing is dropped in the current directory"
    nothing = warehouse("plot", "--parquet", str(tmp_path / "no-export"), env=env)
    assert nothing.returncode == 2 and "no export at" in nothing.stderr and "no prices stored" not in nothing.stderr
    (tmp_path / "not-an-export").mkdir()  # a directory, but not one `warehouse export` wrote
    for command in (("plot",), ("query", "SELECT count(*) FROM price_ticks")):
        wrong = warehouse(*command, "--parquet", str(tmp_path / "not-an-export"), env=env)
        assert wrong.returncode == 2 and "no export at" in wrong.stderr and "day=YYYY-MM-DD" in wrong.stderr


def test_a_secret_too_short_to_mask_is_refused_naming_the_variable() -> None:
    config = config_from_text('[[feeds]]\nname = "saba"\nkind = "saba-sse"\nurl = "http://127.0.0.1:1/x"\n'
                              'token_env = "SABA_TOKEN"\n', "test.toml")
    with pytest.raises(ConfigError, match=r"environment variable SABA_TOKEN .* holds only 1 character;"):
        resolve_secrets(config.feeds[0], {"SABA_TOKEN": "t"})
    assert resolve_secrets(config.feeds[0], {"SABA_TOKEN": "a-real-token"}) == {"token_env": "a-real-token"}


def test_a_database_never_reached_is_said_loudly_and_again(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "NEVER_REACHED_EVERY_S", 0.3)
    url = "postgresql://warehouse:s3cret-pass@127.0.0.1:1/odds"  # nothing listens on port 1
    settings = WriterSettings(spool_dir=tmp_path / "spool", retry_initial_s=0.05, retry_max_s=0.1,
                              connect_timeout_s=1)

    async def main() -> bool:
        async with Writer(url, settings) as writer:
            for _ in range(15):  # frames keep coming while nobody can store them
                await writer.put(None, [CollectorEvent(datetime.now(UTC), "op", None, "connect")])
                await asyncio.sleep(0.1)
            await writer.flush()
            return writer.stats.database_reached

    with caplog.at_level(logging.ERROR, logger="warehouse.writer"):
        reached = asyncio.run(main())
    said = [r.getMessage() for r in caplog.records if "has not been reachable since the start" in r.getMessage()]
    assert not reached and len(said) >= 2
    assert "postgresql://warehouse:***@127.0.0.1:1/odds" in said[0] and "s3cret-pass" not in "".join(said)


def test_status_tells_planned_gaps_from_unplanned_ones(db_url: str, tmp_path: Path) -> None:
    import json

    now = datetime.now(UTC)
    events = [(50, "connect", None), (40, "disconnect", "shutdown"), (30, "connect", None),
              (20, "disconnect", "server closed: code 1006"), (10, "connect", None)]

    async def write() -> None:
        async with Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            await writer.put(None, [CollectorEvent(now - timedelta(seconds=ago), "op", None, event,
                                                   {"reason": reason} if reason else None)
                                    for ago, event, reason in events])

    asyncio.run(write())
    (op,) = json.loads(warehouse("status", "--json", "--database-url", db_url).stdout)
    assert (op["gaps_24h"], op["planned_gaps_24h"], op["reconnects_24h"]) == (2, 1, 2)
    assert abs(op["gap_seconds_24h"] - 20) < 0.01
    table = warehouse("status", "--database-url", db_url).stdout
    assert "1 (+1 planned)" in table and "unplanned gaps 24h" in " ".join(table.split())
