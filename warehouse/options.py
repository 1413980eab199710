"""Settings declared once: a frozen dataclass whose fields carry their own documentation.

Every group of settings — a feed kind's options, the tuning keys every feed takes, `[writer]`,
`[export]`, `[retention]` — is a frozen dataclass. A field's type, default and `setting(doc=…)`
metadata are its whole declaration: `parse` checks a TOML table against it (unknown keys, wrong
types and missing required keys are a ConfigError naming the key), and `keys` lists them for help,
the README and tests. Nothing else keeps a list of keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, phrased as one line that says where and what to do."""


def setting(doc: str, default: Any = MISSING, *, key: str | None = None, convert: Callable[[Any], Any] | None = None,
            secret: bool = False, positive: bool = False, most: int | None = None, aliases: tuple[str, ...] = (),
            internal: bool = False, shown: str | None = None) -> Any:
    """A field of a settings dataclass.

    `key`: its name in TOML when that differs from the field's (`flush_interval_ms` → `flush_interval_s`,
    with `convert`); `secret`: the value names an environment variable that holds a secret;
    `aliases`: older key names still accepted; `internal`: not settable from TOML (a tuning knob for
    tests and benchmarks); `shown`: the default as a user writes it, where `convert` changes its unit."""
    metadata = {"doc": doc, "key": key, "convert": convert, "secret": secret, "positive": positive, "most": most,
                "aliases": aliases, "internal": internal, "shown": shown}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Key:
    """One settable key, as a user writes it in TOML."""

    name: str
    field: str
    annotation: Any
    default: Any  # MISSING when required
    doc: str
    secret: bool = False
    positive: bool = False
    most: int | None = None  # the largest value allowed
    convert: Callable[[Any], Any] | None = None
    aliases: tuple[str, ...] = ()
    shown: str | None = None  # the default as written in TOML, when it differs from the field's

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def type_name(self) -> str:
        return _type_name(self.annotation)


def keys(cls: type[Any]) -> list[Key]:
    """The TOML keys of a settings dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if meta.get("internal") or "doc" not in meta:
            continue
        default: Any = field.default
        if field.default_factory is not MISSING:
            default = field.default_factory()
        found.append(Key(meta["key"] or field.name, field.name, hints[field.name], default, meta["doc"],
                         meta["secret"], meta["positive"], meta["most"], meta["convert"], meta["aliases"],
                         meta.get("shown")))
    return found


def parse(cls: type[T], table: Mapping[str, Any], where: str, section: str, *,
          extra: tuple[str, ...] = ()) -> T:
    """`table` checked against `cls` and turned into an instance. `extra`: keys the caller handles itself."""
    declared = keys(cls)
    by_name = {key.name: key for key in declared} | {alias: key for key in declared for alias in key.aliases}
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name in extra:
            continue
        key = by_name.get(name)
        if key is None:
            allowed = ", ".join(sorted([*(k.name for k in declared), *extra]))
            raise ConfigError(f"{where}: unknown key '{name}' in {section}; allowed: {allowed}")
        if key.field in values:
            raise ConfigError(f"{where}: '{key.name}' is given twice in {section} (once as '{name}')")
        if not _fits(value, key.annotation):
            raise ConfigError(f"{where}: '{name}' in {section} must be {key.type_name}, got {value!r}")
        if key.positive and value <= 0:
            raise ConfigError(f"{where}: '{name}' in {section} must be positive, got {value}")
        if key.most is not None and value > key.most:
            raise ConfigError(f"{where}: '{name}' in {section} must be at most {key.most}, got {value}")
        values[key.field] = key.convert(value) if key.convert else _normal(value, key.annotation)
    for key in declared:
        if key.required and key.field not in values:
            raise ConfigError(f"{where}: missing required key '{key.name}' in {section}")
    return cls(**values)


def to_table(instance: Any) -> dict[str, Any]:
    """The TOML table that `parse` turns back into `instance` (what a connect event records of a
    feed's options, for replay). Keys read through a `convert` are left out: parse cannot take
    their value back, and so are unset ones (TOML has no null)."""
    table = {}
    for key in keys(type(instance)):
        value = getattr(instance, key.field)
        if key.convert is None and value is not None:
            table[key.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) \
                else value
    return table


def describe(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows, for help texts and the README."""
    rows = []
    for key in keys(cls):
        if key.required:
            default = "required"
        elif key.shown is not None:
            default = key.shown
        else:
            default = "none" if key.default in (None, "", ()) else _toml(key.default)
        rows.append((key.name, key.type_name + (" (secret)" if key.secret else ""), default, key.doc))
    return rows


def _toml(value: Any) -> str:
    """A default as a user writes it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str | Path):
        return f'"{value}"'
    return f"{value:g}" if isinstance(value, float) else str(value)


def _fits(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(annotation) if arm is not type(None))
    if origin in (list, tuple):
        (item, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if annotation is Any:
        return True
    if annotation is Path:
        return isinstance(value, str) and bool(value)
    if annotation is float:  # TOML `30` means 30.0; `true` is no number
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _normal(value: Any, annotation: Any) -> Any:
    if annotation is float or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                               and float in typing.get_args(annotation)):
        return float(value) if isinstance(value, int) else value
    if typing.get_origin(annotation) is tuple:
        return tuple(value)
    if Path in (annotation, *typing.get_args(annotation)):
        return Path(value)
    return value


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(annotation) if arm is not type(None))
    if origin in (list, tuple):
        plural = {str: "strings", int: "integers", float: "numbers"}
        return f"a list of {plural.get(typing.get_args(annotation)[0], 'values')}"
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
