"""What the simulators package knows of each feed kind's simulator, found by kind.

Every simulator module declares one `VENDOR`: how `warehouse simulate` makes its simulator from a
`[[feeds]]` entry, and how the fleet (demo, fault tests, soak) runs it beside the others on one
market. The kinds themselves come from `warehouse.feeds.registry`; this only finds, for each, the
module in this package that serves it.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from warehouse.simulate.market import Market


class Simulator(Protocol):
    sent_count: int  # frames sent over every connection: what a collector should have stored
    streams: Streams  # stream connections open now, and the most at once

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host:port` (0: any free port); return the base URL."""
        ...

    async def stop(self) -> None: ...


@dataclass
class Streams:
    """A simulator's open stream connections, as the vendor sees them (from the handshake until the
    socket is closed): how many now, and the most ever open at once — two collectors streaming one
    feed at the same time show as `most` 2."""

    open: int = 0
    most: int = 0
    opened: int = 0
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time.monotonic(), open after it)

    def up(self) -> None:
        self.open += 1
        self.opened += 1
        self.most = max(self.most, self.open)
        self.changes.append((time.monotonic(), self.open))

    def down(self) -> None:
        self.open -= 1
        self.changes.append((time.monotonic(), self.open))


@dataclass
class FleetMember:
    """One vendor's simulator in a fleet, and how a collector is configured to reach it."""

    simulator: Any  # a Simulator (the concrete class, so tests can reach its faults and records)
    feed_options: Callable[[str], dict[str, Any]]  # the simulator's base URL → the [[feeds]] keys besides name/kind


@dataclass(frozen=True)
class Vendor:
    kind: str  # the feed kind it simulates (warehouse.feeds.registry)
    name: str  # its feed's name in the fleet's config, e.g. "oddspapi"
    rate: float  # generated market changes per second in the demo and the fault tests
    env: Mapping[str, str]  # the secret variables the fleet's feed names, and the values the simulator accepts
    member: Callable[[Market, float, bool], FleetMember]  # (market, rate, faults) → its fleet member
    from_feed: Callable[[Any, Mapping[str, str], Market], Simulator]  # (feed options, secrets, market)
    faults_doc: str = field(default="")  # what `faults` makes it do


def vendors() -> dict[str, Vendor]:
    """Every simulator of this package, by the feed kind it serves."""
    import warehouse.simulate as package

    found: dict[str, Vendor] = {}
    for info in pkgutil.iter_modules(package.__path__):
        vendor = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "VENDOR", None)
        if isinstance(vendor, Vendor):
            found[vendor.kind] = vendor
    return found
