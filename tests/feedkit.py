"""Adapters of any registered feed kind, for pure tests: options filled in where a test does not care."""

from __future__ import annotations

import typing
from typing import Any

from warehouse.feeds.contract import Adapter
from warehouse.feeds.registry import FEEDS
from warehouse.options import keys


def options(kind: str, **values: Any) -> Any:
    """The kind's options dataclass: `values`, and a placeholder for each other required key."""
    feed = FEEDS[kind]
    for key in keys(feed.options):
        if key.required and key.field not in values:
            sequence = typing.get_origin(key.annotation) in (list, tuple)
            values[key.field] = () if sequence else f"placeholder-{key.field}"
    return feed.options(**values)


def adapter(kind: str, source: str = "feed", **values: Any) -> Adapter:
    return FEEDS[kind].adapter(source, options(kind, **values))
