"""`warehouse demo` end to end (collect, export, chart), then the analyst notebook headless on its Parquet."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import query
from warehouse import analysis
from warehouse.lake import EXPORT_TABLES

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def test_demo_exports_charts_and_the_notebook_runs_on_it(db_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    env = dict(os.environ, WAREHOUSE_DATA_DIR=str(data), WAREHOUSE_DATABASE_URL=db_url)
    # A short run first: the second must not write to its fixtures (runs used to share fixture ids).
    # --into-warehouse: the database of the test (the demo's own would be a database of the embedded server)
    earlier = subprocess.run([sys.executable, "-m", "warehouse", "demo", "--seconds", "8", "--into-warehouse"],
                             env=env, capture_output=True, text=True, timeout=240)
    assert earlier.returncode == 0, earlier.stderr
    (between,), = query(db_url, "SELECT now()")
    demo = subprocess.run([sys.executable, "-m", "warehouse", "demo", "--seconds", "24", "--seed", "9",
                           "--into-warehouse"], env=env, capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stderr
    assert query(db_url, "SELECT fixture_id FROM price_ticks GROUP BY 1"
                         " HAVING min(received_at) < %s AND max(received_at) > %s", between, between) == []
    assert "simulated matches of seed 9 (the same again: --seed 9)" in demo.stdout.replace("\n", " ")
    featured = re.search(r"line-movement chart of.+?\(fixture ?(id\d+)\): ?(\S+?\.png)", demo.stdout.replace("\n", ""))
    assert featured, demo.stdout

    exports = data / "exports" / db_url.split("/")[3].split("?")[0]  # the database's own lake
    stored = dict(query(db_url, "SELECT 'price_ticks', count(*) FROM price_ticks UNION ALL"
                                " SELECT 'raw_messages', count(*) FROM raw_messages"))
    assert stored["price_ticks"] > 1000
    con = analysis.connect(export_dir=exports)
    for table, rows in stored.items():  # today so far, every row
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows
        assert re.search(rf"│ {table}\s+│\s+{rows:,} │", demo.stdout), demo.stdout
    # every table, with rows or not (the export's own .export/ folder aside)
    assert {p.name for p in exports.iterdir() if not p.name.startswith(".")} == set(EXPORT_TABLES)
    chart = data / "charts" / "demo-line-movement.png"
    assert chart.read_bytes()[:8] == PNG and featured[2] == str(chart)
    assert "jupyter lab notebooks/line_movement.ipynb" in demo.stdout

    notebook = nbformat.read(ROOT / "notebooks" / "line_movement.ipynb", as_version=4)
    monkeypatch.setenv("WAREHOUSE_EXPORT_DIR", str(exports))  # the kernel inherits our environment
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # line movement, margin, scores under prices, the consensus and arbitrage windows, who leads
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 5
    text = "".join(o.get("text", "") for o in outputs)
    # The match the demo charted: it kicked off while we were recording (opening and closing lines).
    assert f"FIXTURE = {featured[1]!r}" in text
    steam = re.search(r"(\d+) steam moves", text)
    assert steam and int(steam[1]) > 0, "goals and sharp money move several bookmakers within seconds"
