"""A warehouse with hot and cold days, for the query surface's tests: five days of ticks, every day
exported, the two oldest dropped by retention (their rows live in the lake only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import query
from tests.test_query_surface import DAYS, write
from warehouse import lake
from warehouse.lifecycle.export import export_all
from warehouse.lifecycle.pending import pending

COLD_DAYS = DAYS[:2]
TICKS = [(day, hour, 2.0 + n / 10 + hour / 100) for n, day in enumerate(DAYS) for hour in (1, 13)]


def retained_warehouse(url: str, tmp_path: Path) -> Path:
    """Fill `url`, export every day to a lake in `tmp_path`, retain 3 days; the lake's root."""
    root = tmp_path / "lake"
    query(url, "SELECT warehouse_ensure_partitions(%s, %s)", DAYS[0], len(DAYS))
    write(url, tmp_path / "spool", TICKS)
    export_all(url, root, pending(url, lake.EXPORT_TABLES))
    retain(url, root, 3)
    assert query(url, "SELECT count(DISTINCT day) FROM retention_runs WHERE rows > 0") == [(len(COLD_DAYS),)]
    return root


def retain(url: str, root: Path, keep_days: int) -> None:
    """`warehouse retain --keep-days N`, its configured lake `root` (the only lake retention trusts)."""
    config = root.parent / "warehouse.toml"
    config.write_text(f"[export]\ndir = {str(root)!r}\n")
    retained = warehouse("retain", "--keep-days", str(keep_days), "--database-url", url, "--config", str(config))
    assert retained.returncode == 0, retained.stderr


def warehouse(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warehouse", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ)


def one_line(stderr: str) -> str:
    """The one line a refusal prints (asserting there is exactly one)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]
