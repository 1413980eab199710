"""Faithful local servers for each vendor protocol (tests, demo, benchmarks).

Each simulator module declares a `VENDOR` (`vendors.Vendor`) for the feed kind it serves;
`simulate()` starts, for every feed of a config, its simulator where the feed's URL points (which
must be on this machine). All of them render one shared market model, so prices, scores and fills
agree across feeds (MM orders fill at the prices the OddsPapi simulator publishes, on the same
fixture ids).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from warehouse.config import Config, ConfigError, resolve_all_secrets
from warehouse.redact import redact_logs
from warehouse.simulate.market import Market
from warehouse.simulate.vendors import vendors

log = logging.getLogger("warehouse.simulate")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


async def simulate(config: Config, environ: Mapping[str, str], stop: asyncio.Event, *, seed: int = 1) -> list[Any]:
    """Start a simulator for every feed of `config`, wait for `stop`, stop them. Returns the simulators."""
    if not config.feeds:
        raise ConfigError(f"{config.where}: no [[feeds]] to simulate; add one (see README)")
    secrets = resolve_all_secrets(config, environ)
    redact_logs([secret for values in secrets.values() for secret in values.values()])
    known = vendors()
    market = Market(seed=seed)
    running = []
    for feed in config.feeds:
        vendor = known.get(feed.kind)
        if vendor is None:
            raise ConfigError(f"[[feeds]] {feed.name}: no simulator for kind {feed.kind!r} in this version")
        url = urlsplit(feed.options.url)
        if url.hostname not in LOOPBACK or not url.port:
            raise ConfigError(f"[[feeds]] {feed.name}: simulators only serve this machine; "
                              f"use a url like ws://127.0.0.1:8765/… (got host {url.hostname!r}, port {url.port})")
        simulator = vendor.from_feed(feed.options, secrets[feed.name], market)
        await simulator.start(url.hostname, url.port)
        log.info("simulating %s (%s) on %s:%s", feed.name, feed.kind, url.hostname, url.port)
        running.append(simulator)
    try:
        await stop.wait()
    finally:
        for simulator in running:
            await simulator.stop()
    return running
