"""Crash safety of the export: `warehouse export` killed (SIGKILL) at every step, a first export of a day
and a re-export of it. Read at that moment and after the kill with pyarrow.dataset, DuckDB and polars,
a day is there exactly once (or, before the commit, absent / its previous export intact): never twice,
never half, never a read error. The next run removes what the killed one left, and leaves exactly one
file per table-day. Leftovers of the earlier folder-swap layout are cleaned (or put back) too."""

from __future__ import annotations

import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pytest

from tests.conftest import query
from tests.test_export import DAYS, at, fill
from warehouse.lifecycle.days import bounds
from warehouse.lifecycle.export import STEPS
from warehouse.store.homes import MARKER

TABLE = "price_ticks"
PAUSED = Path(__file__).with_name("paused_export.py")  # the command line, with a hook that stops at a step
COMMITTED = {"replaced", "recorded"}  # steps after the os.replace: the new file is the day's
Row = tuple[str, str, str, str]  # day, fixture, outcome, received_at: one price row, identified


def arguments(url: str, root: Path, day: date) -> list[str]:
    return ["--database-url", url, "export", "--dir", str(root), "--table", TABLE, "--day", day.isoformat()]


def command(url: str, root: Path, day: date) -> list[str]:
    return [sys.executable, "-m", "warehouse", *arguments(url, root, day)]


def paused(url: str, root: Path, day: date, step: str) -> subprocess.Popen[str]:
    """An export of TABLE's `day`, stopped at `step` (it says so on stderr)."""
    return paused_command(step, arguments(url, root, day), stdout=subprocess.DEVNULL)


def paused_command(step: str, args: list[str], stdout: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """`warehouse ARGS` (an export), stopped at `step` of its first table-day written (it says so on stderr)."""
    process = subprocess.Popen([sys.executable, str(PAUSED), step, *args], stdout=stdout, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + 120
    said = ""
    while f"export paused at {step}" not in said:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and process.poll() is None, f"never paused at {step}: {said}"
        if selector.select(remaining):
            said += process.stderr.readline()
    return process


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def run(url: str, root: Path, day: date) -> None:
    result = subprocess.run(command(url, root, day), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def postgres(url: str, day: date) -> list[Row]:
    rows = query(url, f"SELECT fixture_id, outcome_id, received_at FROM {TABLE}"
                      " WHERE received_at >= %s AND received_at < %s", *bounds(day))
    return sorted((day.isoformat(), f, o, r.isoformat()) for f, o, r in rows)


def readers(root: Path) -> dict[str, list[Row]]:
    """The table's rows as each reader sees the table's folder (errors propagate: a failure)."""
    folder = root / TABLE
    columns = ["fixture_id", "outcome_id", "received_at"]
    arrow = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=[*columns, "day"])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    duck = con.execute(f"SELECT day, fixture_id, outcome_id, received_at FROM read_parquet('{folder}/**/*.parquet',"
                       " hive_partitioning = true)").fetchall()
    polars = pl.scan_parquet(folder, hive_partitioning=True).select(["day", *columns]).collect().rows()
    seen = {"pyarrow": [(r["day"], r["fixture_id"], r["outcome_id"], r["received_at"]) for r in arrow.to_pylist()],
            "duckdb": duck, "polars": polars}
    return {name: sorted((str(d), f, o, r.isoformat()) for d, f, o, r in rows) for name, rows in seen.items()}


def assert_read_as(root: Path, expected: list[Row], when: str) -> None:
    for reader, rows in readers(root).items():
        assert rows == expected, f"{reader} {when}: {len(rows)} rows, expected {len(expected)}"


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def one_file_per_day(*days: date) -> list[str]:
    """The export directory holding nothing but TABLE's files of `days`, the lock and the lake's marker."""
    return sorted([".export/", ".export/lock", MARKER, f"{TABLE}/", *(f"{TABLE}/day={day}/" for day in days),
                   *(f"{TABLE}/day={day}/part-0.parquet" for day in days)])


@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_any_step_never_shows_a_day_twice_or_half(db_url: str, tmp_path: Path, step: str) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    run(db_url, root, DAYS[0])
    before = postgres(db_url, DAYS[0])
    assert len(before) == 6

    # The first export of DAYS[1], killed: the day is absent until the commit, then whole.
    first = postgres(db_url, DAYS[1])
    seen = before + first if step in COMMITTED else before
    process = paused(db_url, root, DAYS[1], step)
    assert_read_as(root, sorted(seen), f"while paused at {step}")
    kill(process)
    assert_read_as(root, sorted(seen), f"after a kill at {step}")
    if step in ("written", "checked"):
        assert [p.suffix for p in (root / ".export").iterdir() if p.name != "lock"] == [".partial"]
    run(db_url, root, DAYS[1])
    assert_read_as(root, sorted(before + first), "after the next run")
    assert tree(root) == one_file_per_day(DAYS[0], DAYS[1])

    # A re-export of DAYS[1] with a late row, killed: the previous export until the commit, then the new one.
    query(db_url, f"INSERT INTO {TABLE} (received_at, source, fixture_id, market_id, outcome_id, price)"
                  " VALUES (%s, 'oddspapi', 'f9', '101', '101', 1.9) RETURNING 1", at(DAYS[1], 5))
    again = postgres(db_url, DAYS[1])
    assert len(again) == len(first) + 1
    seen = before + (again if step in COMMITTED else first)
    process = paused(db_url, root, DAYS[1], step)
    assert_read_as(root, sorted(seen), f"while re-exporting, paused at {step}")
    kill(process)
    assert_read_as(root, sorted(seen), f"after a kill of a re-export at {step}")
    run(db_url, root, DAYS[1])
    assert_read_as(root, sorted(before + again), "after the next run")
    assert tree(root) == one_file_per_day(DAYS[0], DAYS[1])


def test_a_run_cleans_what_the_earlier_layout_left_behind(db_url: str, tmp_path: Path) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    run(db_url, root, DAYS[0])
    run(db_url, root, DAYS[1])
    folder = root / TABLE
    # Killed after its second rename: the old folder stays beside the new one, and the day counts twice.
    shutil.copytree(folder / f"day={DAYS[0]}", folder / f"day={DAYS[0]}.old-4242")
    assert len(readers(root)["duckdb"]) == 2 * 6 + 6
    # Killed between its two renames: only the old folder is left, the day is missing.
    (folder / f"day={DAYS[1]}").rename(folder / f"day={DAYS[1]}.old-4243")
    # Killed while writing: a hidden folder with a 0-byte file, which DuckDB's **/*.parquet refuses.
    (folder / f".day={DAYS[0]}.tmp-4244").mkdir()
    (folder / f".day={DAYS[0]}.tmp-4244" / "part-0.parquet").touch()
    with pytest.raises(duckdb.Error):
        readers(root)

    run(db_url, root, DAYS[0])  # any run cleans the whole export directory first
    assert tree(root) == one_file_per_day(DAYS[0], DAYS[1])
    assert_read_as(root, sorted(postgres(db_url, DAYS[0]) + postgres(db_url, DAYS[1])), "after the clean-up")


def test_a_second_export_into_the_same_directory_waits_for_none_and_says_why(db_url: str, tmp_path: Path) -> None:
    fill(db_url, tmp_path)
    root = tmp_path / "exports"
    process = paused(db_url, root, DAYS[0], "written")
    try:
        result = subprocess.run(command(db_url, root, DAYS[1]), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2
        assert re.fullmatch(r"error: `warehouse export` on \S+ \(pid \d+, role postgres\) is running on this"
                            r" warehouse; export and retention run one at a time: wait for it to finish, then run"
                            r" `warehouse export` again\n", result.stderr), result.stderr
    finally:
        kill(process)
    run(db_url, root, DAYS[1])  # the lock went with the killed process
    assert tree(root) == one_file_per_day(DAYS[1])
