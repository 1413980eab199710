"""Checked `[[feeds]]` entries plus their secrets from the environment: what a collector runs.

Every problem stops `warehouse collect` before anything connects, with one line naming the
config file, the feed and the key.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warehouse.collect.transports import tls_context
from warehouse.config import Config, ConfigError, FeedConfig, resolve_all_secrets
from warehouse.feeds.contract import Feed, Tuning


@dataclass(frozen=True)
class FeedSettings:
    """A feed ready to run: its config entry, checked against its kind, and its secrets."""

    config: FeedConfig
    secrets: Mapping[str, str]  # secret option → value

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def feed(self) -> Feed[Any]:
        return self.config.feed

    @property
    def options(self) -> Any:
        return self.config.options

    @property
    def tuning(self) -> Tuning:
        return self.config.tuning


def feed_settings(config: Config, environ: Mapping[str, str] | None = None) -> list[FeedSettings]:
    if not config.feeds:
        raise ConfigError(f"{config.where}: no [[feeds]] to collect; add one (see README)")
    secrets = resolve_all_secrets(config, os.environ if environ is None else environ)
    for feed in config.feeds:
        if feed.tuning.ca_file:
            try:
                tls_context(feed.tuning.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{config.where}: [[feeds]] {feed.name}: ca_file {feed.tuning.ca_file!r} is not a"
                                  f" readable PEM bundle ({exc})") from None
    return [FeedSettings(feed, secrets[feed.name]) for feed in config.feeds]


def only(feeds: list[FeedSettings], names: Sequence[str], config: Config) -> list[FeedSettings]:
    """The feeds named (`warehouse collect --feed`), in the config's order; all of them if none is."""
    for name in names:
        config.feed(name)  # says which feeds there are when the name is not one
    return [feed for feed in feeds if not names or feed.name in names]
