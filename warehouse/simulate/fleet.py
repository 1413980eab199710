"""All four simulated vendors on one market, and the config that collects from them.

Used by `warehouse demo`, the fault-injection tests and bench/soak.py: start the fleet, hand its
`toml()` (plus `env`) to a collector — in this process or another — and compare what the vendors
sent (`sent()`) with what the warehouse stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
