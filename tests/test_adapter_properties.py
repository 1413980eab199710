"""Property-based: whatever JSON a vendor sends, an adapter returns an Output or raises FrameError
(which the runtime quarantines with its message) — never anything else, never records the writer
would refuse. The runtime's boundary (base.handle) turning any other exception into a FrameError is
a second line of defence, tested separately.

Seed frames are those of the golden fixtures (tests/fixtures/<feed kind>/), for every registered kind:
no list of vendors here."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_type_hints
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import golden
from tests import test_exact_values as exact_values
from warehouse import exactjson
from warehouse.feeds import contract as base
from warehouse.feeds.derive import derive
from warehouse.feeds.registry import FEEDS
from warehouse.lake import decimal_fits
from warehouse.records import Quarantine, Record

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
Seed = tuple[Any, Any]  # (the feed's options, a frame)


@functools.cache
def seeds(kind: str) -> list[Seed]:
    """Every frame of the kind's golden fixtures that fits its schema, with the fixture's options."""
    found = []
    for path in golden.files(kind):
        fixture = golden.load(path)
        options = golden.options_of(kind, fixture)
        found += [(options, step["frame"]) for step in fixture["frames"]
                  if "frame" in step and step.get("kind") != "quarantined"]
    return found


@pytest.mark.parametrize("kind", FEEDS)
def test_every_registered_kind_has_seed_frames(kind: str) -> None:
    assert seeds(kind), f"no golden fixture of {kind} holds a frame that fits (tests/fixtures/{kind}/)"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document (dict keys and list indexes), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def replaced(document: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = exactjson.loads(exactjson.dumps(document))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return copy


@st.composite
def mutated_frames(draw: st.DrawFn, kind_seeds: list[Seed]) -> Seed:
    """A seed frame with one value (anywhere, any depth) replaced by arbitrary JSON: wrong types in every field."""
    options, frame = draw(st.sampled_from(kind_seeds))
    path = draw(st.sampled_from(paths(frame)))
    return options, replaced(frame, path, draw(json_values))


def check(kind: str, options: Any, message: Any, boundary: bool = False) -> None:
    """The adapter itself says what is wrong with a frame (FrameError, quarantined with that reason);
    base.handle, the runtime's boundary, only backs this up for a case nobody foresaw."""
    adapter = FEEDS[kind].adapter("feed", options)
    try:
        output = base.handle(adapter, message, NOW) if boundary else adapter.handle(message, NOW)
    except base.FrameError:
        return
    assert isinstance(output, base.Output)
    for record in output.records:
        assert_fits(record)


# What the writer accepts per annotated field type: anything else would be refused at COPY time.
ACCEPTED = {str: str, int: int, float: (int, float), bool: bool, datetime: datetime, Decimal: Decimal}


def assert_fits(record: Record) -> None:
    for name, hint in get_type_hints(type(record)).items():
        value = getattr(record, name)
        if value is None or hint is Any:
            continue
        options = [a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)]
        expected = tuple(ACCEPTED.get(a, object) for a in options)
        flat = tuple(t for e in expected for t in (e if isinstance(e, tuple) else (e,)))
        assert isinstance(value, flat), f"{type(record).__name__}.{name} = {value!r}"
        if isinstance(value, float):
            assert value == value and abs(value) != float("inf"), f"{type(record).__name__}.{name} = {value!r}"
        if isinstance(value, Decimal):  # stored, and exported, exactly as it came
            assert decimal_fits(value), f"{type(record).__name__}.{name} = {value!r}"


@pytest.mark.parametrize("kind", FEEDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_seed_frames_give_output_or_frame_error(kind: str, data: st.DataObject) -> None:
    check(kind, *data.draw(mutated_frames(seeds(kind))))


@pytest.mark.parametrize("kind", FEEDS)
@settings(max_examples=200, deadline=None)
@given(message=json_values)
def test_arbitrary_json_gives_output_or_frame_error(kind: str, message: Any) -> None:
    options, _ = seeds(kind)[0]
    check(kind, options, message)


@pytest.mark.parametrize("kind", FEEDS)
def test_seed_frames_themselves_give_records(kind: str) -> None:
    outputs = [FEEDS[kind].adapter("feed", options).handle(frame, NOW) for options, frame in seeds(kind)]
    assert sum(len(o.records) for o in outputs) > 0
    for output in outputs:
        for record in output.records:
            assert_fits(record)


@pytest.mark.parametrize("kind", FEEDS)
def test_deeply_nested_json_is_a_frame_error_or_ignored_at_the_boundary(kind: str) -> None:
    options, seed = seeds(kind)[0]
    deep: Any = 1
    for _ in range(1000):  # orjson, which parses every frame first, refuses deeper
        deep = [deep]
    for path in paths(seed)[:20]:
        # Error messages show the offending value; Python cannot even repr 1,000 levels, so this is
        # the case the runtime's boundary exists for (RecursionError -> "nested too deeply").
        check(kind, options, replaced(seed, path, deep), boundary=True)


def test_the_boundary_turns_an_unforeseen_exception_into_a_frame_error() -> None:
    class Buggy:
        def handle(self, message: Any, received_at: datetime) -> base.Output:
            return {}[message]  # a KeyError nobody planned for

    with pytest.raises(base.FrameError, match="unexpected KeyError"):
        base.handle(Buggy(), "x", NOW)

    class Deep:
        def handle(self, message: Any, received_at: datetime) -> base.Output:
            raise RecursionError

    with pytest.raises(base.FrameError, match="nested too deeply"):
        base.handle(Deep(), "x", NOW)


# -- numbers as the wire writes them ---------------------------------------------------------------

# JSON number text of any precision and exponent: beyond a double's 17 digits and its range, beyond the
# lake's DECIMAL(38, 18), beyond what the decoder keeps (1,000 digits either side of the point).
number_texts = st.builds(
    "".join,
    st.tuples(st.sampled_from(["", "-"]),
              st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,45}", fullmatch=True)),
              st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,45}", fullmatch=True)),
              st.one_of(st.just(""), st.builds("e{}".format, st.integers(-1100, 1100)),
                        st.builds("E+{}".format, st.integers(0, 400)))),
)
SENTINEL = "\x00number\x00"


def with_number(frame: Any, path: tuple, text: str) -> bytes:
    """The frame's JSON text with the value at `path` replaced by the number `text`, as the wire spells it."""
    return exactjson.dumps(replaced(frame, path, SENTINEL)).replace(exactjson.dumps(SENTINEL), text.encode())


@pytest.mark.parametrize("kind", FEEDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_number_anywhere_gives_rows_that_fit_or_quarantine(kind: str, data: st.DataObject) -> None:
    """Through the real decoder (numbers as text, not Python floats): an Output whose records fit, or a
    quarantine row with the reason — a number is never rounded into a column nor made infinite or 0."""
    options, seed = data.draw(st.sampled_from(seeds(kind)))
    text = with_number(seed, data.draw(st.sampled_from(paths(seed))), data.draw(number_texts))
    done = derive(FEEDS[kind].adapter("feed", options), kind, text, received_at=NOW, source="feed",
                  connection_id=UUID(int=1), seq=1, event_id=None, max_frame_bytes=1 << 20)
    if done.output is None:
        (row,) = done.records
        assert isinstance(row, Quarantine) and row.reason
        return
    for record in done.records:
        assert_fits(record)


# (frame of tests/test_exact_values.FRAMES, its number, the column it goes to, a price above this or None)
NUMERIC_FIELDS = [
    ("oddspapi", "limit", "max_stake", None), ("mm order", "stake", "stake", None),
    ("mm order", "matched", "matched_stake", None), ("mm bet", "stake", "stake", None),
    ("saba", "max_bet", "max_stake", None), ("saba", "point", "line", None), ("ckex fancy", "line", "line", None),
    ("mm order", "cents", "price", 0), ("mm bet", "price", "price", 1),  # decimal columns holding prices
    ("oddspapi", "price", "price", 1), ("saba", "price", "price", 1), ("ckex", "price", "price", 1),
    ("ckex fancy", "odds", "price", 0),  # double precision columns
]


@pytest.mark.parametrize(("name", "field", "column", "above"), NUMERIC_FIELDS,
                         ids=[f"{n}.{f}" for n, f, _, _ in NUMERIC_FIELDS])
@settings(max_examples=150, deadline=None)
@given(text=number_texts)
def test_a_numeric_column_gets_the_wires_number_or_the_frame_is_quarantined(
        name: str, field: str, column: str, above: int | None, text: str) -> None:
    """A decimal column holds the number sent exactly; a double precision one its nearest double, never
    ±infinity or 0 for a number that is not 0; a price is above its floor. Anything else: quarantined."""
    done = exact_values.derived(name, **{field: text})
    sent = Decimal(text)
    double = float(sent)
    if column != "price" or name.startswith("mm"):  # a decimal column
        fits = decimal_fits(sent) and (above is None or sent > above)
        expected: Any = sent
    elif name.startswith("ckex") and not sent:
        fits, expected = True, None  # a locked quote
    else:
        fits = double - double == 0 and (double != 0 or not sent) and double > above
        expected = double
    if not fits:
        assert done.raw.kind == "quarantined", (text, done.records)
        return
    value = getattr(exact_values.first(done), column)
    assert value == expected and type(value) is type(expected), (text, value)
