"""Values exact from the wire (issue 21, item 6): a number reaches its column as the vendor wrote it, or
the frame is quarantined with the reason — never rounded through a double, never ±infinity or 0 by
overflow, never a price that is none. Each case is a frame's text through the one path from frame to
rows (warehouse.feeds.derive), for every feed where the field exists. Pure: no network, no database
(tests/test_replay.py stores such frames and checks them again)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from tests.exact import identical
from tests.feedkit import adapter
from warehouse import exactjson
from warehouse.feeds.derive import QUARANTINED, Derived, derive
from warehouse.records import Quarantine

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
CONNECTION = UUID("00000000-0000-4000-8000-000000000001")
WIDE = "1234567890.123456789012345678"  # 28 digits: a double keeps 17 (1234567890.1234567)
HUGE = "19999999999999999999"  # 20 digits: a double makes it 20000000000000000000
FINE = "0.1234567890123456789"  # 19 fractional digits: one more than the lake's decimal holds

# One frame per feed with the numbers under test as {placeholders}: each fills in the wire's text.
FRAMES = {
    "oddspapi": ("oddspapi-ws", '{"fixtureId":"f1","bookmakerOdds":{"b":{"markets":{"101":{"outcomes":{"101":'
                                '{"players":{"0":{"price":{price},"limit":{limit},"oddsId":{other}}}}}}}}}}'),
    "oddspapi scores": ("oddspapi-ws", '{"fixtureId":"f1","scores":{"periods":{"1":{"participant1Score":{score},'
                                       '"participant2Score":0}}}}'),
    "mm order": ("mm-ws", '{"type":"broadcast","channel":"orders","event":"INSERT","payload":{"orderId":1,'
                          '"orderCents":{cents},"orderStake":{stake},"matchedStake":{matched}}}'),
    "mm bet": ("mm-ws", '{"type":"broadcast","channel":"bets","event":"INSERT","payload":{"betId":2,'
                        '"placedPrice":{price},"placedStake":{stake}}}'),
    "saba": ("saba-sse", '{"status":0,"message":"Success","payload":{"markets":{"add":[{"marketId":1,"eventId":2,'
                         '"marketStatus":"running","maxBet":{max_bet},"selections":[{"key":"h","point":{point},'
                         '"oddsPrice":{"decimalPrice":{price}}}]}]}}}'),
    "ckex": ("ckex-ws", '{"type":"order-slip","data":[{"event_id":"e","market_id":"1_2","product_id":"1",'
                        '"price":"{price}","status":"{status}"}]}'),
    "ckex fancy": ("ckex-ws", '{"type":"order-slip-fancy","data":[{"eid":"e","mid":"878_5_f","pid":"1",'
                              '"bl":"{line}","bo":"{odds}","ll":"181","lo":"100","status":"1"}]}'),
}
DEFAULTS = {"price": "2.5", "limit": "null", "other": "null", "score": "1", "cents": "0.45", "stake": "100.0",
            "matched": "0", "max_bet": "500", "point": "0.5", "status": "1", "line": "181", "odds": "100"}


def frame(name: str, **numbers: str) -> tuple[str, bytes]:
    kind, template = FRAMES[name]
    text = template
    for key, value in {**DEFAULTS, **numbers}.items():
        text = text.replace("{" + key + "}", value)
    return kind, text.encode()


def derived(name: str, **numbers: str) -> Derived:
    kind, data = frame(name, **numbers)
    return derive(adapter(kind, "feed"), kind, data, received_at=NOW, source="feed", connection_id=CONNECTION, seq=1,
                  event_id=None, max_frame_bytes=1 << 20)


def first(done: Derived) -> Any:
    """The frame's first row of the kind under test (a fancy quote's back side: its lay side follows)."""
    assert done.raw.kind != QUARANTINED, done.records
    return next(r for r in done.records if type(r).__name__ not in ("CollectorEvent", "MarketChange"))


def refused(done: Derived) -> str:
    (row,) = done.records
    assert done.raw.kind == QUARANTINED and isinstance(row, Quarantine)
    return row.reason


# -- exact where the column is a decimal ----------------------------------------------------------


@pytest.mark.parametrize(("name", "numbers", "column", "exact"), [
    ("oddspapi", {"limit": WIDE}, "max_stake", WIDE),
    ("oddspapi", {"limit": HUGE}, "max_stake", HUGE),
    ("oddspapi", {"limit": "1E+19"}, "max_stake", "1E+19"),
    ("oddspapi", {"limit": "0.000000000000000001"}, "max_stake", "0.000000000000000001"),
    ("mm order", {"stake": WIDE}, "stake", WIDE),
    ("mm order", {"matched": HUGE}, "matched_stake", HUGE),
    ("mm order", {"cents": "0.450000000000000001"}, "price", "0.450000000000000001"),
    ("mm bet", {"stake": WIDE, "price": "1.808"}, "stake", WIDE),
    ("saba", {"max_bet": WIDE}, "max_stake", WIDE),
    ("saba", {"point": "-0.250000000000000001"}, "line", "-0.250000000000000001"),
    ("ckex fancy", {"line": WIDE}, "line", WIDE),
])
def test_a_decimal_column_gets_the_number_as_sent(name: str, numbers: dict[str, str], column: str,
                                                   exact: str) -> None:
    value = getattr(first(derived(name, **numbers)), column)
    assert type(value) is Decimal and value == Decimal(exact), value


def test_a_payload_keeps_the_numbers_as_sent_too() -> None:
    """MM's payload is stored whole (jsonb): the stake in it is the column's number, not a double's; so are
    the numbers of fields no column reads (OddsPapi's attrs)."""
    order = first(derived("mm order", stake=WIDE, matched=HUGE))
    identical(order.payload, {"orderId": 1, "orderCents": 0.45, "orderStake": Decimal(WIDE), "matchedStake": int(HUGE)})
    assert exactjson.dumps(order.payload) == (b'{"orderId":1,"orderCents":0.45,"orderStake":' + WIDE.encode()
                                              + b',"matchedStake":' + HUGE.encode() + b"}")
    for text, value in [("1e-400", Decimal("1E-400")), ("1e400", 10**400), (HUGE, int(HUGE))]:
        identical(first(derived("oddspapi", other=text)).attrs, {"oddsId": value})


@pytest.mark.parametrize(("name", "numbers"), [
    ("oddspapi", {"limit": FINE}), ("oddspapi", {"limit": "1e400"}), ("oddspapi", {"limit": "1e-400"}),
    ("oddspapi", {"limit": "100000000000000000000"}), ("mm order", {"stake": FINE}), ("mm order", {"matched": "1e21"}),
    ("mm bet", {"stake": FINE, "price": "1.808"}), ("saba", {"max_bet": FINE}), ("saba", {"point": "1e-19"}),
    ("ckex fancy", {"line": FINE}), ("ckex fancy", {"line": "1e400"}),
])
def test_a_decimal_beyond_the_lake_is_refused_not_rounded(name: str, numbers: dict[str, str]) -> None:
    done = derived(name, **numbers)
    assert "at most 20 integer and 18 fractional digits" in refused(done)
    assert done.raw.payload == frame(name, **numbers)[1]  # nothing lost: the frame is kept as it came


# -- prices: double precision, never ±infinity, 0 by underflow, or no price at all -----------------


@pytest.mark.parametrize(("name", "numbers", "price"), [
    ("oddspapi", {"price": "2.59"}, 2.59),
    ("oddspapi", {"price": "1.8500000000000000001"}, 1.85),  # more digits than a double: the nearest double
    ("oddspapi", {"price": "2"}, 2.0),
    ("oddspapi", {"price": "1.01e2"}, 101.0),
    ("saba", {"price": "1.95"}, 1.95),
    ("ckex", {"price": "10.26"}, 10.26),
    ("ckex", {"price": "0", "status": "-3"}, None),  # a locked quote: no price, not a price of 0
    ("ckex fancy", {"odds": "100"}, 100.0),  # a fancy market's rate, not decimal odds
    ("ckex fancy", {"odds": "0"}, None),
])
def test_a_price_is_the_nearest_double(name: str, numbers: dict[str, str], price: float | None) -> None:
    identical(first(derived(name, **numbers)).price, price)


@pytest.mark.parametrize(("name", "numbers"), [
    ("oddspapi", {"price": "1e400"}), ("oddspapi", {"price": "-1e400"}), ("oddspapi", {"price": "1e-400"}),
    ("oddspapi", {"price": '"1e400"'}), ("oddspapi", {"price": '"1e-400"'}), ("oddspapi", {"price": "1" + "0" * 400}),
    ("saba", {"price": "1e400"}), ("saba", {"price": "1e-400"}),
    ("ckex", {"price": "1e400"}), ("ckex", {"price": "1e-400"}), ("ckex fancy", {"odds": "1e-400"}),
])
def test_a_price_no_double_holds_is_refused_not_infinite_or_zero(name: str, numbers: dict[str, str]) -> None:
    assert "within a double's range" in refused(derived(name, **numbers))


@pytest.mark.parametrize(("name", "numbers", "reason"), [
    ("oddspapi", {"price": "0"}, "decimal odds above 1"), ("oddspapi", {"price": "-1.85"}, "decimal odds above 1"),
    ("oddspapi", {"price": "1"}, "decimal odds above 1"), ("oddspapi", {"price": "0.5"}, "decimal odds above 1"),
    ("oddspapi", {"price": "1.0000000000000000001"}, "decimal odds above 1"),  # its double is 1.0
    ("saba", {"price": "0"}, "decimal odds above 1"), ("saba", {"price": "-1.9"}, "decimal odds above 1"),
    ("ckex", {"price": "-1.61"}, "decimal odds above 1"), ("ckex", {"price": "0.9"}, "decimal odds above 1"),
    ("ckex fancy", {"odds": "-3"}, "price above 0"),
    ("mm bet", {"price": "0.95"}, "decimal odds above 1"), ("mm bet", {"price": "-1.808"}, "decimal odds above 1"),
    ("mm order", {"cents": "0"}, "price above 0"), ("mm order", {"cents": "-0.45"}, "price above 0"),
])
def test_odds_that_are_no_price_are_refused(name: str, numbers: dict[str, str], reason: str) -> None:
    assert reason in refused(derived(name, **numbers))


def test_an_integer_column_holds_what_postgresql_and_the_lake_hold() -> None:
    assert first(derived("oddspapi scores", score="2147483647")).home_score == 2**31 - 1
    assert "integer from -2147483648 to 2147483647" in refused(derived("oddspapi scores", score="2147483648"))
    assert "integer from -2147483648 to 2147483647" in refused(derived("oddspapi scores", score="1e400"))


# -- the decoder -------------------------------------------------------------------------------------


NUMBERS = [
    ("2.59", 2.59), ("-0.0", -0.0), ("1e5", 100000.0), ("1.0000000000000000000", 1.0), ("0.1", 0.1),
    ("1.7976931348623157e308", 1.7976931348623157e308), ("5e-324", 5e-324),  # a double's extremes are doubles
    (WIDE, Decimal(WIDE)), (FINE, Decimal(FINE)), ("1e-400", Decimal("1E-400")), ("-1.5e-400", Decimal("-1.5E-400")),
    ("2.5900000000000000001", Decimal("2.5900000000000000001")),
    ("1e400", 10**400), ("1.8e308", 18 * 10**307), ("12345678901234567890.0", 12345678901234567890),  # whole
    (HUGE, int(HUGE)), ("-" + "9" * 4299, -int("9" * 4299)), ("0e999999", 0.0),
]


@pytest.mark.parametrize(("text", "value"), NUMBERS)
def test_a_number_decodes_as_a_float_only_where_the_float_is_that_number(text: str, value: Any) -> None:
    identical(exactjson.loads(f"[{text}]"), [value])
    identical(exactjson.loads(exactjson.dumps([value])), [value])  # and writes back as the same number


def test_a_number_seen_before_decodes_the_same_however_many_came_between() -> None:
    # the decoder remembers the value of each short text (exactjson._Numbers): it must be the value
    # `number` gives, the second time as the first, after the memory was forgotten, and never a refusal's
    numbers = NUMBERS + [(f"{i}.25", i + 0.25) for i in range(exactjson._REMEMBERED + 10)]
    for _ in range(2):
        for text, value in numbers:
            identical(exactjson.loads(f"[{text}]"), [value])
        with pytest.raises(exactjson.NotJSON, match="more than 1000 digits"):
            exactjson.loads("[1e1000]")


@pytest.mark.parametrize(("text", "reason"), [
    ("1e1000", "more than 1000 digits"), ("1.5e-1001", "more than 1000 digits"),
    ("0." + "1" * 1001, "more than 1000 digits"), ("1" * 4301, "Integer value out of range"),
])
def test_a_number_beyond_what_the_warehouse_keeps_quarantines_its_frame(text: str, reason: str) -> None:
    with pytest.raises(exactjson.NotJSON, match=reason):
        exactjson.loads(f'{{"a": [{text}]}}')
    assert reason in refused(derived("oddspapi", other=text))  # even in a field no column reads


def test_deep_nesting_is_decided_the_same_on_any_stack() -> None:
    """Live collection and replay decode from different stack depths: the depth limit must not depend on it."""
    ok, deep = b"[" * 1024 + b"]" * 1024, b"[" * 1025 + b"]" * 1025

    def nested(levels: int, data: bytes) -> Any:
        if levels:
            return nested(levels - 1, data)
        try:
            return exactjson.loads(data) is not None
        except exactjson.NotJSON as exc:
            return str(exc)

    for levels in (0, sys.getrecursionlimit() // 2):
        assert nested(levels, ok) is True
        assert "depth limit exceeded" in nested(levels, deep)
