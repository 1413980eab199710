"""[[feeds]] entries → validated settings, with secrets read from the environment.

Every problem stops `warehouse collect` before anything connects, with one line naming the
config file, the feed and the key.
"""

from __future__ import annotations

import os
import ssl
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from warehouse.collect.transports import tls_context
from warehouse.config import Config, ConfigError, FeedConfig
from warehouse.feeds import feed_modules

# Tuning keys every feed accepts, with their defaults (None: the feed module's own default).
COMMON_OPTIONS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "silence_timeout_s": ((int, float), None),  # no frame (nor keep-alive) for this long: reconnect
    "ping_interval_s": ((int, float), 20.0),  # WebSocket ping frames; a pong must follow within as long
    "connect_timeout_s": ((int, float), 10.0),
    "max_frame_bytes": (int, 8 * 1024 * 1024),  # larger frames are quarantined with their size
    "backoff_initial_s": ((int, float), 1.0),
    "backoff_max_s": ((int, float), 60.0),
    "backoff_long_s": ((int, float), 300.0),  # after auth failures and maintenance
    "stable_after_s": ((int, float), 30.0),  # a connection that lived this long resets the backoff
    "ca_file": (str, ""),  # PEM bundle of a private CA to trust besides the system's (wss/https)
}


@dataclass(frozen=True)
class FeedSettings:
    name: str
    kind: str
    module: ModuleType
    options: dict[str, Any]  # the feed's own keys
    secrets: dict[str, str]  # secret option key → value from the environment
    silence_timeout_s: float
    ping_interval_s: float
    connect_timeout_s: float
    max_frame_bytes: int
    backoff_initial_s: float
    backoff_max_s: float
    backoff_long_s: float
    stable_after_s: float
    ca_file: str


def feed_settings(config: Config, environ: Mapping[str, str] | None = None) -> list[FeedSettings]:
    environ = os.environ if environ is None else environ
    modules = feed_modules()
    if not config.feeds:
        raise ConfigError(f"{config.path or 'no config file'}: no [[feeds]] to collect; add one (see README)")
    feeds = [_one(config, feed, modules, environ) for feed in config.feeds]
    _check_connection_limits(config, feeds)
    return feeds


def only(feeds: list[FeedSettings], names: Sequence[str], config: Config) -> list[FeedSettings]:
    """The feeds named (`warehouse collect --feed`), in the config's order; all of them if none is."""
    known = [feed.name for feed in feeds]
    for name in names:
        if name not in known:
            raise ConfigError(f"{config.path}: no feed is named {name!r}; its feeds are: {', '.join(known)}")
    return [feed for feed in feeds if not names or feed.name in names]


def _check_connection_limits(config: Config, feeds: list[FeedSettings]) -> None:
    """A vendor limit on sockets per key holds across every feed of the config (one socket per feed)."""
    per_key = Counter((f.module, tuple(sorted(f.secrets.values()))) for f in feeds)
    for (module, _), count in per_key.items():
        limit = getattr(module, "MAX_CONNECTIONS_PER_KEY", None)
        if limit is not None and count > limit:
            raise ConfigError(f"{config.path}: {count} {module.KIND} feeds use the same key, but the vendor "
                              f"allows {limit} connections per key; use another key or fewer feeds")


def _one(config: Config, feed: FeedConfig, modules: dict[str, ModuleType], environ: Mapping[str, str]) -> FeedSettings:
    where = f"{config.path}: [[feeds]] {feed.name}"
    module = modules.get(feed.kind)
    if module is None:
        raise ConfigError(f"{where}: kind {feed.kind!r} is not available in this version; "
                          f"available: {', '.join(sorted(modules))}")
    allowed = {**{k: (t, False) for k, (t, _) in COMMON_OPTIONS.items()}, **module.OPTIONS}
    for key, value in feed.options.items():
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}'; allowed: {', '.join(sorted(allowed))}")
        kind = allowed[key][0]
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            raise ConfigError(f"{where}: '{key}' has the wrong type ({value!r})")
    for key, (_, required) in module.OPTIONS.items():
        if required and key not in feed.options:
            raise ConfigError(f"{where}: missing required key '{key}'")
    problem = module.validate(feed.options) if hasattr(module, "validate") else None
    if problem:
        raise ConfigError(f"{where}: {problem}")
    secrets = {}
    for key in module.SECRET_OPTIONS:
        if key in feed.options:
            variable = feed.options[key]
            value = environ.get(variable, "")
            if not value.strip():
                raise ConfigError(f"{where}: environment variable {variable} (named by '{key}') is not set; "
                                  "export it before starting the collector")
            secrets[key] = value.strip()
    tuning = {key: feed.options.get(key, default) for key, (_, default) in COMMON_OPTIONS.items()}
    if tuning["silence_timeout_s"] is None:
        tuning["silence_timeout_s"] = module.DEFAULT_SILENCE_S
    if tuning["ca_file"]:
        try:
            tls_context(tuning["ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: ca_file {tuning['ca_file']!r} is not a readable PEM bundle ({exc})") from None
    own = {k: v for k, v in feed.options.items() if k not in COMMON_OPTIONS}
    return FeedSettings(name=feed.name, kind=feed.kind, module=module, options=own, secrets=secrets, **tuning)
