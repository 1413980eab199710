"""The README's "A week of history" walk-through, run as written (its shell block, in bash), and what
it promises: past days written as collected, retention keeping two days hot, one query over hot and
cold, the chart of a match days old."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import query
from tests.markdown import README, blocks
from warehouse.store.embedded import EmbeddedPostgres

PNG = b"\x89PNG\r\n\x1a\n"


def walkthrough() -> str:
    section = README.read_text().split("### A week of history", 1)[1].split("\n#", 1)[0]
    (block,) = [b for b in blocks(README, "bash") if b.code in section]
    return block.code


def test_the_week_of_history_walkthrough_runs_as_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "WAREHOUSE_DATA_DIR": str(data)}
    env.pop("WAREHOUSE_DATABASE_URL", None)
    # `.venv/bin/warehouse` as the README's reader has it: this test's own virtualenv
    script = walkthrough().replace(".venv/bin/warehouse", str(Path(sys.executable).with_name("warehouse")))
    server = EmbeddedPostgres(data / "postgres")
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        today = datetime.now(UTC).date()
        past = [today - timedelta(days=back) for back in range(7, 0, -1)]
        assert f"history: 7 past days ({past[0]} to {past[-1]})" in out

        # retention dropped every day but today and yesterday (the demo had exported them all) ...
        assert f"dropped 6 days ({past[0]} … {past[5]}) from PostgreSQL" in out
        demo = server.url("demo")
        hot = query(demo, "SELECT DISTINCT CAST(received_at AT TIME ZONE 'UTC' AS date) FROM price_ticks ORDER BY 1")
        assert [day for (day,) in hot] == [past[-1], today]
        assert query(server.url(), "SELECT to_regclass('price_ticks')") == [(None,)]  # the warehouse: untouched

        # ... and the query still reads each of the eight days, from PostgreSQL or Parquet, once
        days = re.findall(r"│ (\d{4}-\d\d-\d\d) │ (\d+) +│ (\d+) +│", out)
        assert [day for day, _, _ in days] == [str(day) for day in [*past, today]]
        per_day = {day: int(prices) for day, prices, _ in days}
        assert all(10_000 < per_day[str(day)] < 20_000 for day in past), per_day  # an afternoon of 1X2 prices
        assert all(int(fixtures) >= 8 for _, _, fixtures in days[:7])

        (chart,) = re.findall(r"wrote (\S+\.png)", out)
        fixture = re.search(r"line-(id\d+)-101\.png", chart)
        assert fixture and Path(chart).read_bytes()[:8] == PNG
        # a match of a cold day: none of its prices is in PostgreSQL any more
        assert query(demo, "SELECT count(*) FROM price_ticks WHERE fixture_id = %s", fixture[1]) == [(0,)]
    finally:
        server.destroy()
