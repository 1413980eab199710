"""Every feed kind of this version, by its config `kind`: the one list of vendors.

Config validation, the collector runtime, the simulators' fleet, the demo and the tests all read
it. Adding a vendor is a module in `warehouse/feeds/`, its simulator in `warehouse/simulate/`,
and one entry here (docs/adding-a-feed.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from warehouse.feeds import ckex, mm, oddspapi, saba
from warehouse.feeds.contract import Feed

FEEDS: Mapping[str, Feed[Any]] = MappingProxyType({feed.kind: feed for feed in (
    oddspapi.FEED,
    saba.FEED,
    ckex.FEED,
    mm.FEED,
)})
