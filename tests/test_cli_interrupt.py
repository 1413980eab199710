"""Ctrl-C and pipes (issue 26 item 4): one Ctrl-C stops a command busy in DuckDB with status 130 and the
one word `interrupted` (DuckDB by itself sees it only between its tasks: minutes, then a
RuntimeError), and a reader closing the output early (`| head -2`) ends it quietly, with 141."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.test_query_surface import TODAY, write
from warehouse.analysis.surface import APPLICATION_NAME

BOUND = 60  # seconds: far beyond the second a Ctrl-C takes, so that only a command that ignores it fails

# A PostgreSQL scan, then hours of DuckDB: while it runs, its PostgreSQL session waits, idle in transaction.
LONG = ("SELECT count(*) FROM price_ticks, range(1000000000) r, range(1000000000) s"
        " WHERE r.range + s.range = length(source)")


def busy(url: str, process: subprocess.Popen[str]) -> None:
    """Wait until `process`'s query reads PostgreSQL, then computes."""
    deadline = time.monotonic() + BOUND
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state ="
                            " 'idle in transaction'", (APPLICATION_NAME,)).fetchall():
                return
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.1)


def test_ctrl_c_stops_a_query_busy_in_duckdb_with_130(db_url: str, tmp_path: Path) -> None:
    write(db_url, tmp_path / "spool", [(TODAY, 1, 2.5)])
    process = subprocess.Popen([sys.executable, "-m", "warehouse", "query", LONG, "--database-url", db_url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    busy(db_url, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=BOUND)
    assert (process.returncode, stdout, stderr) == (130, "", "interrupted\n")


# The real command line, with the export's step hook running a long DuckDB query where its COPY runs.
BUSY_EXPORT = """
import sys, duckdb
from warehouse.cli import app
from warehouse.lifecycle import export

def busy(step):
    if step == "start":
        print("export busy", file=sys.stderr, flush=True)
        duckdb.connect().execute("SELECT count(*) FROM range(1000000000) r, range(1000000000) s"
                                 " WHERE r.range + s.range = 3").fetchall()

export.reached = busy
app(args=sys.argv[1:], prog_name="warehouse")
"""


def test_ctrl_c_stops_an_export_busy_in_duckdb_with_130(db_url: str, tmp_path: Path) -> None:
    write(db_url, tmp_path / "spool", [(TODAY, 1, 2.5)])
    process = subprocess.Popen([sys.executable, "-c", BUSY_EXPORT, "export", "--day", "today", "--dir",
                                str(tmp_path / "lake"), "--database-url", db_url],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    assert process.stderr.readline() == "export busy\n"
    time.sleep(0.5)  # into the query
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=BOUND)
    assert (process.returncode, stdout, stderr) == (130, "", "interrupted\n")


def test_a_reader_closing_the_output_early_ends_the_query_quietly(db_url: str) -> None:
    for output in ("csv", "json", "table"):
        process = subprocess.Popen([sys.executable, "-m", "warehouse", "query", "SELECT range AS n FROM range(50000)",
                                    "--format", output, "--database-url", db_url],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
        assert process.stdout is not None and process.stderr is not None
        head = [process.stdout.readline(), process.stdout.readline()]  # `| head -2`
        process.stdout.close()
        assert process.wait(timeout=BOUND) == 128 + signal.SIGPIPE, output
        assert process.stderr.read() == b"", output
        assert head[0].strip() in (b"n", b"[", "┏━━━━━━━┓".encode()), head
