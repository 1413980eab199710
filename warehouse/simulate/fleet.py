"""All four simulated vendors on one market, and the config that collects from them.

Used by `warehouse demo`, the fault-injection tests and bench/soak.py: start the fleet, hand its
`toml()` (plus `ENV`) to a collector — in this process, or as `CollectorProcess` — and compare what
the vendors sent (`sent()`) with what the warehouse stored. `FleetThread` runs the fleet on its own
event loop, as remote vendors would be, while the caller stops databases and kills processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warehouse.simulate.ckex import CkexFaults, CkexSimulator
from warehouse.simulate.market import Market
from warehouse.simulate.mm import CHANNELS, MmSimulator
from warehouse.simulate.oddspapi import OddsPapiFaults, OddsPapiSimulator
from warehouse.simulate.saba import SabaFaults, SabaSimulator

# Secrets the simulators accept; the collector reads them from these environment variables.
ENV = {"FLEET_ODDSPAPI_KEY": "fleet-oddspapi-key-5b9f0c3e", "FLEET_SABA_TOKEN": "eyJhbGciOiJIUzI1NiJ9.fleet-saba",
       "FLEET_CKEX_TOKEN": "eyJhbGciOiJIUzI1NiJ9.fleet-ckex", "FLEET_MM_KEY": "0d7e3c1a-5b6f-4c2d-9e8f-123456789abc"}
SUBSCRIPTIONS = ["order-slip-quote@chloe-market#40789105-e@1_33753655",
                 "order-slip-quote@fancy-market#44914246-e@878_55854706_f"]


@dataclass
class Fleet:
    """Rates are frames per second of generated market changes per vendor."""

    seed: int = 1
    rates: dict[str, float] = field(default_factory=lambda: {"oddspapi": 200, "saba": 50, "ckex": 20, "mm": 20})
    faults: bool = False  # every vendor drops connections now and then and sends a malformed frame
    simulators: dict[str, Any] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    async def start(self) -> None:
        market = Market(seed=self.seed)
        rates, faulty = self.rates, self.faults
        self.simulators = {
            "oddspapi": OddsPapiSimulator(
                ENV["FLEET_ODDSPAPI_KEY"], rate=rates["oddspapi"], market=market, record=False,
                faults=OddsPapiFaults(drop_after=400, malformed_every=97) if faulty else None),
            "saba": SabaSimulator(static_token=ENV["FLEET_SABA_TOKEN"], rate=rates["saba"], keepalive_s=2,
                                  cache_size=100_000, market=market,
                                  faults=SabaFaults(drop_after=150, malformed_every=53) if faulty else None),
            "ckex": CkexSimulator(ENV["FLEET_CKEX_TOKEN"], rate=rates["ckex"], alive_s=2, market=market,
                                  faults=CkexFaults(drop_after=60, malformed_every=17) if faulty else None),
            "mm": MmSimulator({ENV["FLEET_MM_KEY"]: CHANNELS}, rate=rates["mm"], heartbeat_s=5, market=market,
                              drop_after=60 if faulty else None, malformed_every=19 if faulty else None),
        }
        for name, simulator in self.simulators.items():
            self.urls[name] = await simulator.start()

    async def stop(self) -> None:
        for simulator in self.simulators.values():
            await simulator.stop()

    def sent(self) -> dict[str, int]:
        return {name: simulator.sent_count for name, simulator in self.simulators.items()}

    def toml(self, **tuning: object) -> str:
        """[[feeds]] for the four vendors; `tuning` adds common keys (e.g. silence_timeout_s) to each."""
        extra = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in tuning.items())
        subscriptions = ", ".join(f'"{s}"' for s in SUBSCRIPTIONS)
        return (
            f'[[feeds]]\nname = "oddspapi"\nkind = "oddspapi-ws"\nurl = "{self.urls["oddspapi"]}"\n'
            f'api_key_env = "FLEET_ODDSPAPI_KEY"\n{extra}\n'
            f'[[feeds]]\nname = "saba"\nkind = "saba-sse"\nurl = "{self.urls["saba"]}/sports/stream/v1/GetEvents"\n'
            f'token_env = "FLEET_SABA_TOKEN"\n{extra}\n'
            f'[[feeds]]\nname = "ckex"\nkind = "ckex-ws"\nurl = "{self.urls["ckex"]}"\ntoken_env = "FLEET_CKEX_TOKEN"\n'
            f"subscriptions = [{subscriptions}]\n{extra}\n"
            f'[[feeds]]\nname = "mm"\nkind = "mm-ws"\nurl = "{self.urls["mm"]}"\napi_key_env = "FLEET_MM_KEY"\n{extra}'
        )


class FleetThread:
    """A Fleet on its own event loop in a background thread."""

    def __init__(self, rates: dict[str, float], faults: bool = False) -> None:
        self.fleet = Fleet(rates=rates, faults=faults)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FleetThread:
        self.thread.start()
        self.call(self.fleet.start())
        return self

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop_sending(self) -> dict[str, int]:
        """Stop the vendors (connections closed after what was sent) and say how much each sent."""
        self.call(self.fleet.stop())
        return self.fleet.sent()

    def __exit__(self, *exc: object) -> None:
        self.call(self.fleet.stop())
        self.call(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


async def _cancel_the_rest() -> None:
    """Connection handlers still running: cancel them so none is left to be garbage-collected."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class CollectorProcess:
    """`warehouse collect` on the fleet as a separate process; its data dir (spool) under `workdir`."""

    def __init__(self, url: str, workdir: Path, fleet: Fleet, *, extra: str = "", metrics_port: int = 0) -> None:
        self.config = workdir / "feeds.toml"
        self.config.write_text(fleet.toml(silence_timeout_s=10, backoff_initial_s=0.2, backoff_max_s=1.0) + extra)
        self.spool = workdir / "data" / "spool" / "collector"
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
