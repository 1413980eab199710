"""The throwaway PostgreSQL every benchmark runs against."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from warehouse.store.embedded import EmbeddedPostgres


def scratch_server(name: str) -> tuple[Path, EmbeddedPostgres]:
    """A fresh embedded PostgreSQL in a temporary folder that also holds the run's spools and exports.
    Call `server.destroy()` when done."""
    workdir = Path(tempfile.mkdtemp(prefix=f"owh-bench-{name}-"))
    os.environ["WAREHOUSE_DATA_DIR"] = str(workdir)
    server = EmbeddedPostgres(workdir / "pg")
    server.ensure_running()
    return workdir, server
