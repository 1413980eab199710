"""The OddsPapi adapter is written for speed (issue 28); the plain walk it replaced
(tests/oddspapi_oracle.py) is the oracle: for any message, the same frame kind and rows, or the
same FrameError. The golden fixtures hold both to today's rows besides."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._peer import oddspapi_frames
from tests.oddspapi_oracle import PlainAdapter
from tests.test_adapter_properties import json_values, mutated_frames, seeds
from warehouse import exactjson
from warehouse.feeds.contract import FrameError
from warehouse.feeds.oddspapi import ORIGIN_SNAPSHOT, Adapter

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def outcome(adapter: Any, message: Any) -> tuple[Any, ...]:
    try:
        output = adapter.handle(message, NOW)
    except FrameError as exc:
        return ("FrameError", str(exc))
    return (output.frame_kind, output.records, output.control, output.detail)


def same(message: Any, origin: str | None = None) -> None:
    fast, plain = outcome(Adapter("op", origin), message), outcome(PlainAdapter("op", origin), message)
    assert fast == plain
    if fast[0] != "FrameError":  # NamedTuples equal as tuples: the record types must agree too
        assert [type(r) for r in fast[1]] == [type(r) for r in plain[1]]


def test_the_benchmarks_frames_give_the_plain_walks_rows() -> None:
    frames = oddspapi_frames(random.Random(7), NOW)
    for _ in range(300):
        message = exactjson.loads(next(frames))
        same(message)
        same(message, ORIGIN_SNAPSHOT)
    assert outcome(Adapter("op"), message)[0] == "price"


def test_every_level_with_keys_of_its_own_in_any_order() -> None:
    player = {"price": 2.5, "active": True, "limit": 100, "changedAt": "2026-12-06T00:00:00Z", "x": 1}
    message = {
        "startTime": "2026-12-07T18:00:00Z", "fixtureId": 5, "statusId": 1,
        "bookmakerOdds": {
            "a": {"markets": {"101": {"outcomes": {"101": {"players": {"0": player}}}, "bookmakerMarketId": "m"}}},
            "b": {"bookmakerFixtureId": "f", "markets": {}},
            "c": {"markets": {"102": {"outcomes": {"103": {"players": {}}, "104": {"players": {"1": {}}}}}}},
            "d": {"fixturePath": "p", "markets": None},
        },
        "scores": {"periods": {"result": {"participant1Score": 1, "participant2Score": 0}}},
    }
    same(message)
    assert outcome(Adapter("op"), message)[0] == "fixture+price+bookmaker+score"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_seed_frames_give_the_plain_walks_outcome(data: st.DataObject) -> None:
    _, message = data.draw(mutated_frames(seeds("oddspapi-ws")))
    same(message)


@settings(max_examples=200, deadline=None)
@given(message=json_values)
def test_arbitrary_json_gives_the_plain_walks_outcome(message: Any) -> None:
    same(message)
