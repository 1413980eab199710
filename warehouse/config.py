"""TOML config file → typed settings. Unknown keys are errors that name the key and the file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warehouse.store.writer import WriterSettings

FEED_KINDS = ("oddspapi-ws", "saba-sse", "ckex-ws", "mm-ws")


class ConfigError(ValueError):
    """A config problem, phrased as one line that says where and what to do."""


# [writer] keys → (type, WriterSettings field, conversion). Defaults live in WriterSettings only.
_WRITER_KEYS: dict[str, tuple[type, str, Any]] = {
    "batch_rows": (int, "batch_rows", int),
    "flush_interval_ms": (int, "flush_interval", lambda ms: ms / 1000),
    "queue_frames": (int, "queue_units", int),
    "spool_dir": (str, "spool_dir", Path),
    "spool_fsync": (bool, "spool_fsync", bool),
}


@dataclass(frozen=True)
class FeedConfig:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)  # kind-specific keys, checked by the feed


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    database_url: str | None = None
    export_dir: Path | None = None
    writer: dict[str, Any] = field(default_factory=dict)  # validated [writer] keys, paths resolved
    feeds: tuple[FeedConfig, ...] = ()

    @property
    def spool_dir(self) -> Path | None:
        return self.writer.get("spool_dir")

    def writer_settings(self) -> WriterSettings:
        from warehouse.store.writer import WriterSettings  # keep config light to import

        overrides = {_WRITER_KEYS[key][1]: _WRITER_KEYS[key][2](value) for key, value in self.writer.items()}
        return WriterSettings(**overrides)


def load_config(path: Path | str | None) -> Config:
    """Read `path`; None gives the defaults (embedded database, no feeds)."""
    if path is None:
        return Config()
    path = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return _parse(data, path)


def config_from_text(text: str, name: str) -> Config:
    """A config written by the program itself (the demo's); `name` stands in for the file in errors."""
    return _parse(tomllib.loads(text), Path(name))


def _parse(data: dict[str, Any], path: Path) -> Config:
    where = str(path)
    _check_keys(data, {"database", "export", "writer", "feeds"}, where, "top level")
    database = _table(data, "database", where)
    _check_keys(database, {"url"}, where, "[database]")
    export = _table(data, "export", where)
    _check_keys(export, {"dir"}, where, "[export]")
    writer = _table(data, "writer", where)
    _check_keys(writer, set(_WRITER_KEYS), where, "[writer]")
    for key, value in writer.items():
        _typed(writer, key, _WRITER_KEYS[key][0], where, "[writer]")
        if _WRITER_KEYS[key][0] is int and value <= 0:
            raise ConfigError(f"{where}: '{key}' in [writer] must be positive, got {value}")

    base = path.parent
    if "spool_dir" in writer:
        writer = {**writer, "spool_dir": _path(writer["spool_dir"], base)}
    return Config(
        path=path,
        database_url=_typed(database, "url", str, where, "[database]"),
        export_dir=_path(_typed(export, "dir", str, where, "[export]"), base),
        writer=writer,
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
        name = _typed(entry, "name", str, where, section)
        kind = _typed(entry, "kind", str, where, section)
        if not name:
            raise ConfigError(f"{where}: {section} needs a 'name' (it becomes `source` in every row)")
        if kind not in FEED_KINDS:
            raise ConfigError(
                f"{where}: {section} ({name}) has unknown kind {kind!r}; use one of {', '.join(FEED_KINDS)}"
            )
        if any(f.name == name for f in feeds):
            raise ConfigError(f"{where}: two feeds are named {name!r}; names must be unique")
        options = {k: v for k, v in entry.items() if k not in ("name", "kind")}
        feeds.append(FeedConfig(name=name, kind=kind, options=options))
    return tuple(feeds)


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a table ([{key}])")
    return value


def _check_keys(data: dict[str, Any], allowed: set[str], where: str, section: str) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}' in {section}; allowed: {', '.join(sorted(allowed))}"
            )


def _typed(data: dict[str, Any], key: str, kind: type, where: str, section: str, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None:
        return None
    # bool is an int in Python; a TOML `true` must not pass for a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' in {section} must be a {kind.__name__}, got {value!r}")
    return value


def _path(value: str | None, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
