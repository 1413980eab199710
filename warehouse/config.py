"""TOML config file → typed settings. Unknown keys are errors that name the key and the file.

Every section is a settings dataclass (`warehouse.options`): `[database]`, `[export]`, `[writer]`,
`[retention]`, and per `[[feeds]]` entry the feed kind's own options plus the tuning keys every
feed takes. The feed kinds come from `warehouse.feeds.registry`. Secrets are never in the file:
options marked secret name environment variables, read by `resolve_secrets` when a command needs
them.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from warehouse.feeds.contract import Feed, Tuning
from warehouse.feeds.registry import FEEDS
from warehouse.options import ConfigError, keys, parse, setting
from warehouse.redact import MIN_SECRET_LENGTH

__all__ = ["CollectorSettings", "Config", "ConfigError", "FeedConfig", "WriterSettings", "config_from_text",
           "load_config", "resolve_all_secrets", "resolve_secrets"]


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    url: str | None = setting("PostgreSQL URL: libpq's (postgresql://…, or keywords host=… dbname=…) or"
                              " SQLAlchemy's (postgresql+asyncpg://…, postgresql+psycopg://…; asyncpg's ssl=MODE"
                              " is read as sslmode=MODE); --database-url and $WAREHOUSE_DATABASE_URL win", None)


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    dir: str | None = setting("the lake: where the Parquet export goes and the only place retention trusts: a"
                              " directory (relative: to this file) or s3://BUCKET/PREFIX; default"
                              " <data dir>/exports/<database>", None)
    s3_endpoint: str | None = setting("a bucket lake's S3-compatible server, e.g. http://127.0.0.1:9000 (http:// means"
                                      " no TLS); default $AWS_ENDPOINT_URL, else AWS S3", None)
    s3_region: str | None = setting("a bucket lake's region; default $AWS_REGION, else $AWS_DEFAULT_REGION, else"
                                    " us-east-1", None)
    s3_url_style: str | None = setting("path or vhost (bucket in the host name); default path with s3_endpoint,"
                                       " else vhost", None)


@dataclass(frozen=True, kw_only=True)
class WriterSettings:
    """How the writer batches, bounds memory and spools (the `[writer]` section, plus internal knobs)."""

    batch_rows: int = setting("commit once this many rows are waiting…", 10_000, positive=True)
    flush_interval_s: float = setting("…or this long (in ms) after the first reached an idle writer; frames that"
                                      " queued up during a commit go at once", 0.010, key="flush_interval_ms",
                                      convert=lambda ms: ms / 1000, positive=True, shown="10")
    queue_units: int = setting("in-memory bound of frames (with their rows) and events waiting; producers wait"
                               " beyond it", 20_000, positive=True, aliases=("queue_frames",))
    connections: int = setting("1 or 2: with 2, a writer that falls behind sends a batch's rows on a second connection"
                               " while the batch before commits on the first", 2, positive=True, most=2)
    spool_dir: Path | None = setting("where batches wait while the database is unreachable (default"
                                     " <data dir>/spool/<database>/collector; `collect --feed X`: …-X)", None)
    spool_fsync: bool = setting("fsync each spooled batch", True)
    retry_initial_s: float = setting("database reconnect backoff, doubling (with jitter)…", 0.25, internal=True)
    retry_max_s: float = setting("…up to this", 5.0, internal=True)
    partition_days_ahead: int = setting("daily partitions created ahead", 3, internal=True)
    ingest_batches_retention_days: int = setting("batch ids kept for exactly-once replays", 30, internal=True)
    connect_timeout_s: float = setting("connecting to PostgreSQL may take this long", 5.0, internal=True)
    statement_timeout_s: float = setting("a transaction taking longer counts as an outage", 120.0, internal=True)


@dataclass(frozen=True, kw_only=True)
class CollectorSettings:
    """How collector processes share the feeds (the `[collector]` section): docs/claims.md."""

    name: str | None = setting("names this process in claims, `warehouse status` and collector_events; default"
                               " <hostname>:<pid>", None)
    claim_ttl_s: float = setting("a holder that stops renewing its claims (killed, cut off from the database) keeps"
                                 " its feeds at most this long; it renews every third of it", 10.0, positive=True)
    poll_s: float = setting("how often a standby looks for a feed to take (a clean stop wakes it at once)", 1.0,
                            internal=True)
    watch_s: float = setting("how long a handover's late frames are deduplicated against the new holder's",
                             3600.0, internal=True)

    @property
    def renew_every_s(self) -> float:
        return self.claim_ttl_s / 3

    @property
    def margin_s(self) -> float:
        """How long before the database's expiry a holder that could not renew closes its connections."""
        return max(1.0, self.claim_ttl_s / 5)


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    keep_days: int | None = setting("`warehouse retain` keeps this many UTC days (today included) in PostgreSQL and"
                                    " drops older ones once their export is verified; off by default", None,
                                    positive=True)


@dataclass(frozen=True)
class FeedConfig:
    """One `[[feeds]]` entry, checked against its feed kind."""

    name: str  # becomes `source` in every row
    feed: Feed[Any]
    options: Any  # an instance of feed.options
    tuning: Tuning = field(default_factory=Tuning)

    @property
    def kind(self) -> str:
        return self.feed.kind

    @property
    def silence_timeout_s(self) -> float:
        return self.tuning.silence_timeout_s or self.feed.default_silence_s

    def secret_variables(self) -> dict[str, str]:
        """Secret option → the environment variable it names (for the options that are set)."""
        return {key.field: getattr(self.options, key.field) for key in keys(self.feed.options)
                if key.secret and getattr(self.options, key.field)}


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    writer: WriterSettings = field(default_factory=WriterSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    feeds: tuple[FeedConfig, ...] = ()

    @property
    def database_url(self) -> str | None:
        return self.database.url

    @property
    def export_dir(self) -> Path | str | None:
        """The lake: a directory, or a bucket's s3:// URL (a string: a path would fold its `//`)."""
        found = self.export.dir
        return None if found is None else found if found.startswith("s3://") else Path(found)

    @property
    def where(self) -> str:
        return str(self.path) if self.path else "no config file"

    def feed(self, name: str) -> FeedConfig:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        raise ConfigError(f"{self.where}: no feed is named {name!r}; its feeds are: "
                          f"{', '.join(f.name for f in self.feeds) or 'none'}")


_SECTIONS = {"database": DatabaseSettings, "export": ExportSettings, "writer": WriterSettings,
             "retention": RetentionSettings, "collector": CollectorSettings}


def load_config(path: Path | str | None) -> Config:
    """Read `path`; None gives the defaults (embedded database, no feeds)."""
    if path is None:
        return Config()
    path = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return _parse(data, path)


def config_from_text(text: str, name: str) -> Config:
    """A config written by the program itself (the demo's); `name` stands in for the file in errors."""
    return _parse(tomllib.loads(text), Path(name))


def resolve_secrets(feed: FeedConfig, environ: Mapping[str, str], where: str = "") -> dict[str, str]:
    """Secret option → its value from the environment. A variable unset, or too short to be masked
    without masking ordinary text with it, stops the command with one line naming it."""
    prefix = f"{where}: [[feeds]] {feed.name}" if where else f"[[feeds]] {feed.name}"
    secrets = {}
    for option, variable in feed.secret_variables().items():
        value = environ.get(variable, "").strip()
        if not value:
            raise ConfigError(f"{prefix}: environment variable {variable} (named by '{option}') is not set; "
                              "export it before starting")
        if len(value) < MIN_SECRET_LENGTH:
            characters = f"{len(value)} character{'s' if len(value) > 1 else ''}"
            raise ConfigError(f"{prefix}: environment variable {variable} (named by '{option}') holds only "
                              f"{characters}; a secret shorter than {MIN_SECRET_LENGTH} cannot be masked"
                              " in logs and frames without destroying other text; use the real key")
        secrets[option] = value
    return secrets


def resolve_all_secrets(config: Config, environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Every feed's secrets (feed name → secret option → value), and the vendors' limits on
    connections per key, which hold across every feed of a config (one socket per feed)."""
    resolved = {feed.name: resolve_secrets(feed, environ, config.where) for feed in config.feeds}
    per_key = Counter((feed.feed, tuple(sorted(resolved[feed.name].values()))) for feed in config.feeds)
    for (feed, _), count in per_key.items():
        limit = feed.max_connections_per_key
        if limit is not None and count > limit:
            raise ConfigError(f"{config.where}: {count} {feed.kind} feeds use the same key, but the vendor allows"
                              f" {limit} connections per key; use another key or fewer feeds")
    return resolved


def _parse(data: dict[str, Any], path: Path) -> Config:
    where = str(path)
    allowed = [*_SECTIONS, "feeds"]
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}' in top level; allowed: {', '.join(sorted(allowed))}")
    sections: dict[str, Any] = {name: parse(cls, _table(data, name, where), where, f"[{name}]")
                                for name, cls in _SECTIONS.items()}
    base = path.parent
    writer = sections["writer"]
    export = sections["export"]
    return Config(
        path=path,
        database=sections["database"],
        export=replace(export, dir=export.dir if export.dir is None or export.dir.startswith("s3://")
                       else str(_relative_to(Path(export.dir), base))),
        writer=replace(writer, spool_dir=_relative_to(writer.spool_dir, base)),
        retention=sections["retention"],
        collector=sections["collector"],
        feeds=_feeds(data.get("feeds", []), where),
    )


def _feeds(entries: Any, where: str) -> tuple[FeedConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: 'feeds' must be a list of [[feeds]] tables")
    feeds: list[FeedConfig] = []
    for index, entry in enumerate(entries, 1):
        section = f"[[feeds]] #{index}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: {section} must be a table")
        name, kind = entry.get("name"), entry.get("kind")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: {section} needs a 'name' (it becomes `source` in every row)")
        if not isinstance(kind, str) or kind not in FEEDS:
            raise ConfigError(f"{where}: {section} ({name}) has unknown kind {kind!r}; use one of {', '.join(FEEDS)}")
        if any(f.name == name for f in feeds):
            raise ConfigError(f"{where}: two feeds are named {name!r}; names must be unique")
        feed = FEEDS[kind]
        section = f"[[feeds]] {name}"
        tuning_keys = tuple(key.name for key in keys(Tuning))
        own = {k: v for k, v in entry.items() if k not in tuning_keys}
        options = parse(feed.options, own, where, section, extra=("name", "kind", *tuning_keys))
        tuning = parse(Tuning, {k: v for k, v in entry.items() if k in tuning_keys}, where, section)
        problem = feed.validate(options)
        if problem:
            raise ConfigError(f"{where}: {section}: {problem}")
        feeds.append(FeedConfig(name, feed, options, tuning))
    return tuple(feeds)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a table ([{key}])")
    return value


def _relative_to(value: Path | None, base: Path) -> Path | None:
    if value is None:
        return None
    value = value.expanduser()
    return value if value.is_absolute() else (base / value).resolve()
