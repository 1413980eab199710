"""The Saba adapter is written for speed (issue 28): its dict walk, and its typed walk of a frame's
levels above the events and markets straight from the text (`handle_text`, tried first by derive()).
The plain walk it replaced (tests/saba_oracle.py) is the oracle: for any frame, after any frames
before it, the same frame kind and rows, or the same FrameError (or the same reason the text is no
JSON), and the same market → event map after it. The golden fixtures hold both to today's rows besides."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._peer import saba_frames, saba_snapshot
from tests import golden
from tests.saba_oracle import PlainAdapter
from tests.test_adapter_properties import json_values, mutated_frames, seeds
from warehouse import exactjson
from warehouse.feeds.contract import FrameError
from warehouse.feeds.saba import Adapter

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def text_outcome(adapter: Any, data: bytes) -> tuple[Any, ...]:
    """What derive() makes of the text: the typed walk, else the text decoded and handled; and the
    adapter's map after it."""
    typed = getattr(adapter, "handle_text", None)
    output = typed(data, NOW) if typed is not None else None
    if output is None:
        try:
            message = exactjson.loads(data)
        except exactjson.NotJSON as exc:
            return ("NotJSON", str(exc), dict(adapter.event_of_market))
        try:
            output = adapter.handle(message, NOW)
        except FrameError as exc:
            return ("FrameError", str(exc), dict(adapter.event_of_market))
    return (output.frame_kind, output.records, output.control, output.detail, dict(adapter.event_of_market))


def agree(fast: tuple[Any, ...], plain: tuple[Any, ...]) -> None:
    assert fast == plain
    if fast[0] not in ("FrameError", "NotJSON"):  # NamedTuples equal as tuples: the record types must agree too
        assert [type(r) for r in fast[1]] == [type(r) for r in plain[1]]
        for a, b in zip(fast[1], plain[1], strict=True):  # and the attrs keep the frame's key order
            assert [list(x) if isinstance(x, dict) else x for x in a] == [
                list(y) if isinstance(y, dict) else y for y in b]


def same_sequence(texts: list[bytes]) -> tuple[Adapter, list[tuple[Any, ...]]]:
    """Both adapters through the same frames, in order; each frame's outcomes agree (and the map after it)."""
    fast, plain = Adapter("saba"), PlainAdapter("saba")
    outcomes = []
    for text in texts:
        outcome = text_outcome(fast, text)
        agree(outcome, text_outcome(plain, text))
        outcomes.append(outcome)
    return fast, outcomes


def test_the_benchmarks_frames_take_the_typed_walk_and_give_the_plain_walks_rows() -> None:
    rng = random.Random(7)
    frames = saba_frames(rng, NOW)
    texts = [saba_snapshot(rng, NOW), *(next(frames) for _ in range(300))]
    adapter = Adapter("saba")
    for text in texts:
        assert adapter.handle_text(text, NOW) is not None
    _, outcomes = same_sequence(texts)
    assert outcomes[0][0] == "status-1" and outcomes[1][0] == "status-0"
    assert len(outcomes[1][1]) == 4  # the market and its three prices


def test_every_golden_fixture_in_order_gives_the_plain_walks_outcomes() -> None:
    for path in golden.files("saba-sse"):
        fixture = golden.load(path)
        texts = [exactjson.dumps(step["frame"]) if "frame" in step else step["text"].encode()
                 for step in fixture["frames"] if "frame" in step or "text" in step]
        same_sequence(texts)


MARKET = (b'{"marketId":%s,"eventId":38255274,"betType":1,"marketStatus":"running","maxBet":%s,'
          b'"selections":[{"key":"h","point":%s,"oddsPrice":{"decimalPrice":%s,"malayPrice":0.95}}]}')
SNAPSHOT = (b'{"status":1,"message":"InitialData","payload":{"events":{"add":[],"change":[],"remove":[]},'
            b'"markets":{"add":[%s],"change":[],"remove":[]}}}' % (MARKET % (b"7", b"null", b"0.5", b"1.95")))


def delta(*markets: bytes, remove: bytes = b"") -> bytes:
    return (b'{"status":0,"message":"Success","payload":{"events":{"add":[],"change":[],"remove":[]},'
            b'"markets":{"add":[],"change":[%s],"remove":[%s]}}}' % (b",".join(markets), remove))


def test_texts_the_typed_walk_leaves_to_handle_give_the_plain_walks_outcome() -> None:
    texts = [
        delta(MARKET % (b"7", b"null", b"0.5", b"2.5")),
        delta(MARKET % (b"7", b"1234567890.123456789012345678", b"0.5", b"2.50")),  # exact, by the same rule
        delta(MARKET % (b"7", b"null", b"0.5", b"2.5" + b"0" * 2000)),  # beyond what the warehouse keeps
        delta(MARKET % (b"7", b"null", b"0.5", b"1.0")),  # no price: refused
        delta(MARKET.replace(b"0.95", b"1e400") % (b"7", b"null", b"1e400", b"2")),  # a line beyond a decimal: refused
        # the first market moves the map, the second is refused: the map as the plain walk leaves it
        delta(MARKET.replace(b"38255274", b"99") % (b"8", b"null", b"0.5", b"2"),
              MARKET % (b"9", b'"x"', b"0.5", b"2")),
        delta(MARKET % (b"7", b"null", b"0.5", b"2"), remove=b"7"),  # a market removed: `handle` takes it
        delta(MARKET % (b"7", b"null", b"[" * 3000 + b"]" * 3000, b"2")),  # deep
        delta(MARKET.replace(b'"key":"h"', b'"key":"h","keyName":"Home","key":"a"') % (b"7", b"null", b"1", b"2")),
        delta(MARKET.replace(b'"selections"', b'"resourceId":"r","selections"') % (b"7", b"null", b"1", b"2")),
        delta(MARKET.replace(b'"key"', b'"decimalPrice":3,"key"') % (b"7", b"null", b"1", b"2")),
        delta(b"5", MARKET % (b"7", b"null", b"0.5", b"2")),
        delta(MARKET % (b"true", b"null", b"0.5", b"2")),
        SNAPSHOT.replace(b'"status":1', b'"status":3'),
        SNAPSHOT.replace(b'"status":1', b'"status":true'),
        SNAPSHOT.replace(b'"status":1', b'"status":1.0'),
        SNAPSHOT.replace(b'"status":1', b'"status":1,"extra":1'),
        SNAPSHOT.replace(b'"events":{', b'"events":{"extra":[],'),
        SNAPSHOT.replace(b'"markets":{', b'"markets":{"extra":[],'),
        SNAPSHOT.replace(b'"add":[],"change"', b'"add":[5],"change"', 1),
        SNAPSHOT.replace(b'"add":[],"change"', b'"add":null,"change"', 1),
        b'{"status":0,"payload":null}', b'{"status":0,"payload":[]}', b'{"status":0,"payload":{"markets":0}}',
        b'{"status":0}', b'{"status":2}', b'{"status":99,"message":"later"}', b'{"status":97}', b"[1]", b"{", b"",
        delta(MARKET % (b"10", b"null", b"0.5", b"2")),  # a market of no known event: the fixture is empty
    ]
    for text in texts:  # each after the snapshot, then all in one sequence
        same_sequence([SNAPSHOT, text])
    _, outcomes = same_sequence([SNAPSHOT, *texts])
    assert outcomes[2][1][1].attrs == {"malayPrice": 0.95, "betType": 1}
    assert outcomes[2][1][1].max_stake == Decimal("1234567890.123456789012345678")
    assert outcomes[6][0] == "FrameError" and outcomes[6][2]["8"] == "99"
    assert outcomes[7][1][0].action == "remove" and outcomes[7][1][2].fixture_id == "38255274"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_seed_frames_give_the_plain_walks_outcome(data: st.DataObject) -> None:
    _, first = data.draw(st.sampled_from(seeds("saba-sse")))
    _, message = data.draw(mutated_frames(seeds("saba-sse")))
    same_sequence([exactjson.dumps(first), exactjson.dumps(message)])


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_arbitrary_json_gives_the_plain_walks_outcome(value: Any) -> None:
    texts = [exactjson.dumps(value), exactjson.dumps({"status": 0, "payload": value}),
             exactjson.dumps({"status": 1, "payload": {"markets": {"add": value}}}),
             exactjson.dumps({"status": 0, "payload": {"markets": {"change": [value]}}}),
             exactjson.dumps({"status": 0, "payload": {"events": {"change": [value]}}})]
    same_sequence([SNAPSHOT, *texts])
