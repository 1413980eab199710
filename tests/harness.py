"""`warehouse collect` as a separate process against a fleet of simulated vendors (tests, bench/soak.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from warehouse.simulate.fleet import ENV, Fleet
from warehouse.store.homes import database_name, folder_name


class CollectorProcess:
    """`warehouse collect` on the fleet as a separate process; its data dir (spool) under `workdir`."""

    def __init__(self, url: str, workdir: Path, fleet: Fleet, *, extra: str = "", metrics_port: int = 0) -> None:
        self.config = workdir / "feeds.toml"
        self.config.write_text(fleet.toml(silence_timeout_s=10, backoff_initial_s=0.2, backoff_max_s=1.0) + extra)
        self.spool = workdir / "data" / "spool" / folder_name(database_name(url)) / "collector"
        self.env = {**os.environ, **ENV, "WAREHOUSE_DATA_DIR": str(workdir / "data")}
        self.argv = [sys.executable, "-m", "warehouse", "--database-url", url, "--config", str(self.config), "collect"]
        if metrics_port:
            self.argv += ["--metrics-port", str(metrics_port)]
        self.log = workdir / "collector.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def signal(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)
