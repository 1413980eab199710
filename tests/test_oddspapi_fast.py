"""The OddsPapi adapter is written for speed (issue 28): its dict walk, and its typed walk of price
frames straight from their text (`handle_text`, tried first by derive()). The plain walk it replaced
(tests/oddspapi_oracle.py) is the oracle: for any message, or any text, the same frame kind and rows,
or the same FrameError (or the same reason the text is no JSON). The golden fixtures hold both to
today's rows besides."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
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


def text_outcome(adapter: Any, data: bytes) -> tuple[Any, ...]:
    """What derive() makes of the text: the typed walk, else the text decoded and handled."""
    typed = getattr(adapter, "handle_text", None)
    output = typed(data, NOW) if typed is not None else None
    if output is not None:
        return (output.frame_kind, output.records, output.control, output.detail)
    try:
        message = exactjson.loads(data)
    except exactjson.NotJSON as exc:
        return ("NotJSON", str(exc))
    return outcome(adapter, message)


def agree(fast: tuple[Any, ...], plain: tuple[Any, ...]) -> None:
    assert fast == plain
    if fast[0] not in ("FrameError", "NotJSON"):  # NamedTuples equal as tuples: the record types must agree too
        assert [type(r) for r in fast[1]] == [type(r) for r in plain[1]]


def same(message: Any, origin: str | None = None) -> None:
    agree(outcome(Adapter("op", origin), message), outcome(PlainAdapter("op", origin), message))
    text = exactjson.dumps(message)
    agree(text_outcome(Adapter("op", origin), text), text_outcome(PlainAdapter("op", origin), text))


def test_the_benchmarks_frames_give_the_plain_walks_rows() -> None:
    frames = oddspapi_frames(random.Random(7), NOW)
    for _ in range(300):
        data = next(frames)
        assert Adapter("op").handle_text(data, NOW) is not None  # the typed walk takes them
        message = exactjson.loads(data)
        same(message)
        same(message, ORIGIN_SNAPSHOT)
    assert outcome(Adapter("op"), message)[0] == "price"


PRICE = (b'{"fixtureId":"f1","bookmakerOdds":{"b":{"markets":{"101":{"outcomes":{"101":{"players":{"0":'
         b'{"price":%s,"limit":%s,"changedAt":"2026-12-06T00:00:00Z","x":%s}}}}}}}}}')


def test_text_the_typed_walk_leaves_to_handle_gives_the_plain_walks_outcome() -> None:
    texts = [
        PRICE % (b"2.5", b"null", b"1"),
        PRICE % (b"2.50", b"1234567890.123456789012345678", b"1e400"),  # exact numbers, by the same rule
        PRICE % (b"2.5" + b"0" * 2000, b"null", b"1"),  # beyond what the warehouse keeps: no JSON to it
        PRICE % (b"1.0", b"null", b"1"),  # no price: refused
        PRICE % (b"2.5", b'"x"', b"1"),
        PRICE % (b"2.5", b"null", b"[" * 3000 + b"]" * 3000),  # deep
        PRICE.replace(b'"fixtureId":"f1"', b'"fixtureId":"f1","fixtureId":"f2"') % (b"2", b"null", b"1"),
        PRICE.replace(b'"fixtureId":"f1"', b'"fixtureId":null') % (b"2", b"null", b"1"),
        PRICE.replace(b'"players":', b'"extra":1,"players":') % (b"2", b"null", b"1"),
        PRICE.replace(b'"outcomes":', b'"bookmakerMarketId":"m","outcomes":') % (b"2", b"null", b"1"),
        PRICE.replace(b'"markets":', b'"bookmakerFixtureId":"f","markets":') % (b"2", b"null", b"1"),
        PRICE.replace(b'"fixtureId":"f1"', b'"fixtureId":"f1","statusId":1') % (b"2", b"null", b"1"),
        PRICE.replace(b'"markets":{', b'"markets":[') % (b"2", b"null", b"1"),
        b'{"fixtureId":"f1","bookmakerOdds":{"b":{"markets":{"101":{"outcomes":{"101":{"players":{"0":5}}}}}}}}',
        b'{"fixtureId":"f1","bookmakerOdds":{"b":{"markets":false}}}',
        b'{"fixtureId":"f1","bookmakerOdds":null}', b'{"fixtureId":7}', b"[1]", b"{", b"",
    ]
    for text in texts:
        agree(text_outcome(Adapter("op"), text), text_outcome(PlainAdapter("op"), text))
    assert text_outcome(Adapter("op"), texts[1])[1][0].max_stake == Decimal("1234567890.123456789012345678")


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
    same({"fixtureId": "f", "bookmakerOdds": {"b": {"markets": {"1": {"outcomes": {"1": {"players": message}}}}}}})
