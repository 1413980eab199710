"""Faithful local servers for each vendor protocol (tests, demo, benchmarks).

Each module has KIND and `from_feed(options, secrets, market)`; `simulate()` starts, for every
feed of a config, its simulator where the feed's URL points (which must be on this machine).
All of them render one shared market model, so prices, scores and fills agree across feeds (MM
orders fill at the prices the OddsPapi simulator publishes, on the same fixture ids).
"""

from __future__ import annotations

import asyncio
import logging
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from warehouse.collect.redact import redact_logs
from warehouse.collect.settings import FeedSettings
from warehouse.config import ConfigError
from warehouse.feeds import modules_by_kind
from warehouse.simulate.market import Market

log = logging.getLogger("warehouse.simulate")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def simulator_modules() -> dict[str, ModuleType]:
    return modules_by_kind(__name__, __path__, ("from_feed",))


async def simulate(feeds: list[FeedSettings], stop: asyncio.Event, *, seed: int = 1) -> list[Any]:
    """Start a simulator for every feed, wait for `stop`, stop them. Returns the simulators."""
    redact_logs([secret for feed in feeds for secret in feed.secrets.values()])
    modules = simulator_modules()
    market = Market(seed=seed)
    running = []
    for feed in feeds:
        module = modules.get(feed.kind)
        if module is None:
            raise ConfigError(f"[[feeds]] {feed.name}: no simulator for kind {feed.kind!r} in this version")
        url = urlsplit(feed.options["url"])
        if url.hostname not in LOOPBACK or not url.port:
            raise ConfigError(f"[[feeds]] {feed.name}: simulators only serve this machine; "
                              f"use a url like ws://127.0.0.1:8765/… (got host {url.hostname!r}, port {url.port})")
        simulator = module.from_feed(feed.options, feed.secrets, market)
        await simulator.start(url.hostname, url.port)
        log.warning("simulating %s (%s) on %s:%s", feed.name, feed.kind, url.hostname, url.port)
        running.append(simulator)
    try:
        await stop.wait()
    finally:
        for simulator in running:
            await simulator.stop()
    return running
