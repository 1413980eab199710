"""Golden adapter fixtures (tests/fixtures/<feed kind>/*.json): reading them, running their frames.

The file format is described in tests/fixtures/README.md. Frames go through the one path from frame to
records (warehouse.feeds.derive) with an adapter built from the registry, so a fixture also
pins how a frame that does not fit is quarantined.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.feedkit import options as make_options
from warehouse import exactjson
from warehouse.feeds.derive import derive
from warehouse.feeds.registry import FEEDS
from warehouse.records import TABLE_OF

FIXTURES = Path(__file__).parent / "fixtures"
CONNECTION = UUID("00000000-0000-4000-8000-000000000001")  # the connection_id of every fixture's frames
MAX_FRAME_BYTES = 1 << 20
RECEIVED_AT = "2026-11-21T12:00:00+00:00"
_CLASS_OF = {table: cls for cls, table in TABLE_OF.items()}


def files(kind: str) -> list[Path]:
    return sorted((FIXTURES / kind).glob("*.json"))


def every_file() -> list[Path]:
    return [path for kind in FEEDS for path in files(kind)]


def load(path: Path) -> dict[str, Any]:
    """A fixture, its numbers exact (a frame's 20-digit stake, and what its records say of it)."""
    return exactjson.loads(path.read_bytes())  # type: ignore[no-any-return]


def kind_of(path: Path) -> str:
    return path.parent.name


def options_of(kind: str, fixture: dict[str, Any]) -> Any:
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fixture.get("options", {}).items()}
    return make_options(kind, **values)


@dataclass
class Result:
    kind: str  # raw_messages.kind
    control: str | None
    detail: Any
    records: list[Any] = field(default_factory=list)


def run(path: Path) -> list[Result]:
    """Every frame of the fixture through one fresh adapter (state carries from frame to frame)."""
    fixture = load(path)
    kind = kind_of(path)
    feed = FEEDS[kind]
    adapter = feed.adapter(fixture["source"], options_of(kind, fixture))
    received_at = datetime.fromisoformat(fixture.get("received_at", RECEIVED_AT))
    results = []
    for seq, step in enumerate(fixture["frames"], 1):
        # `text`: the frame's bytes as sent (not JSON), decoded by the feed as the collector does
        data = feed.decode(step["text"].encode(), MAX_FRAME_BYTES) if "text" in step else exactjson.dumps(step["frame"])
        derived = derive(adapter, kind, data, received_at=received_at, source=fixture["source"],
                         connection_id=CONNECTION, seq=seq, event_id=None, max_frame_bytes=MAX_FRAME_BYTES)
        output = derived.output
        results.append(Result(derived.raw.kind, output.control if output else None,
                              output.detail if output else None, derived.records))
    return results


# -- records as JSON ----------------------------------------------------------------------------


def _base_type(cls: type[Any], name: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    options = [a for a in typing.get_args(hint) or (hint,) if a is not type(None)]
    return options[0] if len(options) == 1 else Any


def record_from_json(entry: dict[str, Any]) -> Any:
    """{"table": ..., "values": {column: JSON}} → the record; datetimes, decimals and UUIDs as text."""
    cls = _CLASS_OF[entry["table"]]
    values = {}
    for name, value in entry["values"].items():
        base = _base_type(cls, name)
        if value is not None and base in (datetime, Decimal, UUID):
            value = datetime.fromisoformat(value) if base is datetime else base(value)
        values[name] = value
    return cls(**values)


def record_to_json(record: Any) -> dict[str, Any]:
    values = {}
    for name, value in zip(record._fields, record, strict=True):
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal | UUID):
            value = str(value)
        values[name] = value
    return {"table": TABLE_OF[type(record)], "values": values}
