"""Property-based: whatever JSON a vendor sends, an adapter returns an Output or raises FrameError
(which the runtime quarantines with its message) — never anything else, never records the writer
would refuse. The runtime's boundary (base.handle) turning any other exception into a FrameError is
a second line of defence, tested separately."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_type_hints

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import test_ckex, test_mm, test_oddspapi, test_saba
from tests.feedkit import adapter as make_adapter
from warehouse.feeds import contract as base
from warehouse.feeds.registry import FEEDS
from warehouse.lake import decimal_fits
from warehouse.records import Record

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
SEEDS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "oddspapi-ws": ([orjson.loads(f) for f in test_oddspapi.SEED], {}),
    "saba-sse": ([orjson.loads(f) for _, f in test_saba.SEED], {}),
    "ckex-ws": ([orjson.loads(f) for f in test_ckex.SEED], {"subscriptions": tuple(test_ckex.SUBSCRIPTIONS)}),
    "mm-ws": ([orjson.loads(f) for f in test_mm.SEED], {}),
}


def test_every_registered_kind_has_seed_frames() -> None:
    assert set(SEEDS) == set(FEEDS)

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
    copy = orjson.loads(orjson.dumps(document))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return copy


@st.composite
def mutated_frames(draw: st.DrawFn, seeds: list[Any]) -> Any:
    """A seed frame with one value (anywhere, any depth) replaced by arbitrary JSON: wrong types in every field."""
    frame = draw(st.sampled_from(seeds))
    path = draw(st.sampled_from(paths(frame)))
    return replaced(frame, path, draw(json_values))


def check(kind: str, options: dict[str, Any], message: Any, boundary: bool = False) -> None:
    """The adapter itself says what is wrong with a frame (FrameError, quarantined with that reason);
    base.handle, the runtime's boundary, only backs this up for a case nobody foresaw."""
    adapter = make_adapter(kind, **options)
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


@pytest.mark.parametrize("feed", SEEDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_seed_frames_give_output_or_frame_error(feed: str, data: st.DataObject) -> None:
    seeds, options = SEEDS[feed]
    check(feed, options, data.draw(mutated_frames(seeds)))


@pytest.mark.parametrize("feed", SEEDS)
@settings(max_examples=200, deadline=None)
@given(message=json_values)
def test_arbitrary_json_gives_output_or_frame_error(feed: str, message: Any) -> None:
    _, options = SEEDS[feed]
    check(feed, options, message)


@pytest.mark.parametrize("feed", SEEDS)
def test_seed_frames_themselves_give_records(feed: str) -> None:
    seeds, options = SEEDS[feed]
    adapter = make_adapter(feed, **options)
    outputs = [adapter.handle(frame, NOW) for frame in seeds]
    assert sum(len(o.records) for o in outputs) > 0
    for output in outputs:
        for record in output.records:
            assert_fits(record)


@pytest.mark.parametrize("feed", SEEDS)
def test_deeply_nested_json_is_a_frame_error_or_ignored_at_the_boundary(feed: str) -> None:
    seeds, options = SEEDS[feed]
    deep: Any = 1
    for _ in range(1000):  # orjson, which parses every frame first, refuses deeper
        deep = [deep]
    for path in paths(seeds[0])[:20]:
        # Error messages show the offending value; Python cannot even repr 1,000 levels, so this is
        # the case the runtime's boundary exists for (RecursionError -> "nested too deeply").
        check(feed, options, replaced(seeds[0], path, deep), boundary=True)


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
