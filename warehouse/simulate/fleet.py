"""Every simulated vendor on one market, and the config that collects from them.

Used by `warehouse demo`, the fault-injection tests and bench/soak.py: start the fleet, hand its
`toml()` (plus `ENV`) to a collector, and compare what the vendors sent (`sent()`) with what the
warehouse stored. One simulator per feed kind of the registry. `FleetThread` runs the fleet on its
own event loop, as remote vendors would be, while the caller stops databases and kills processes.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from warehouse.feeds.registry import FEEDS
from warehouse.simulate.market import Market
from warehouse.simulate.vendors import FleetMember, Vendor, vendors


def fleet_vendors() -> list[Vendor]:
    """The simulator of every registered feed kind, in the registry's order."""
    found = vendors()
    missing = [kind for kind in FEEDS if kind not in found]
    if missing:
        raise RuntimeError(f"no simulator for feed kind {missing[0]!r}: add one to warehouse/simulate/")
    return [found[kind] for kind in FEEDS]


# Secrets the simulators accept; the collector reads them from these environment variables.
ENV: dict[str, str] = {name: value for vendor in fleet_vendors() for name, value in vendor.env.items()}


@dataclass
class Fleet:
    """`rates`: generated market changes per second, by vendor name (default: each vendor's own).
    `match_s`/`kickoff_in_s`: the market's time scale (see `Market`)."""

    seed: int = 1
    rates: dict[str, float] = field(default_factory=dict)
    faults: bool = False  # every vendor drops connections now and then and sends malformed frames
    match_s: float = Market.match_s
    kickoff_in_s: float = Market.kickoff_in_s
    members: dict[str, FleetMember] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    market: Market | None = None  # made by start(): new fixture ids every time

    @property
    def simulators(self) -> dict[str, Any]:
        return {name: member.simulator for name, member in self.members.items()}

    async def start(self) -> None:
        market = self.market = Market(seed=self.seed, match_s=self.match_s, kickoff_in_s=self.kickoff_in_s)
        for vendor in fleet_vendors():
            member = vendor.member(market, self.rates.get(vendor.name, vendor.rate), self.faults)
            self.members[vendor.name] = member
            self.urls[vendor.name] = await member.simulator.start()

    async def stop(self) -> None:
        for member in self.members.values():
            await member.simulator.stop()

    def sent(self) -> dict[str, int]:
        return {name: member.simulator.sent_count for name, member in self.members.items()}

    def toml(self, **tuning: object) -> str:
        """A [[feeds]] entry per vendor; `tuning` adds common keys (e.g. silence_timeout_s) to each."""
        entries = []
        for vendor in fleet_vendors():
            keys = {"name": vendor.name, "kind": vendor.kind,
                    **self.members[vendor.name].feed_options(self.urls[vendor.name]), **tuning}
            entries.append("[[feeds]]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in keys.items()))
        return "\n".join(entries)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


class FleetThread:
    """A Fleet on its own event loop in a background thread."""

    def __init__(self, rates: dict[str, float] | None = None, faults: bool = False) -> None:
        self.fleet = Fleet(rates=rates or {}, faults=faults)
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
