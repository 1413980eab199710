"""Golden adapter tests: every frame of every fixture under tests/fixtures/<feed kind>/ gives exactly
the records, frame kind, control signal and detail the fixture says. Pure: no network, no database.
How to write one: tests/fixtures/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exact import identical
from tests.golden import FIXTURES, every_file, files, load, record_from_json, run
from warehouse.feeds.registry import FEEDS


@pytest.mark.parametrize("path", every_file(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_fixture_gives_exactly_what_it_says(path: Path) -> None:
    fixture = load(path)
    for n, (step, result) in enumerate(zip(fixture["frames"], run(path), strict=True), 1):
        where = f"{path.parent.name}/{path.name} frame {n}"
        assert "records" in step, f"{where} says nothing yet: run tests/fixtures/fill_golden.py, then read it"
        assert (result.kind, result.control) == (step["kind"], step["control"]), where
        identical(result.detail, step["detail"], f"{where} detail")
        identical(result.records, [record_from_json(r) for r in step["records"]], where)


@pytest.mark.parametrize("kind", FEEDS)
def test_every_registered_feed_kind_has_golden_fixtures(kind: str) -> None:
    assert files(kind), f"tests/fixtures/{kind}/ holds no fixture: add one per seed frame (tests/fixtures/README.md)"


def test_every_fixture_directory_is_a_registered_feed_kind() -> None:
    directories = {p.name for p in FIXTURES.iterdir() if p.is_dir() and any(p.glob("*.json"))}
    assert directories <= set(FEEDS), "fixtures of a feed kind that is not registered (renamed?)"


def test_a_fixture_that_says_otherwise_fails() -> None:
    """The comparison is exact: a Decimal's exponent, an int where a float is, another offset."""
    path = FIXTURES / "oddspapi-ws" / "integer-price-and-limit.json"
    tick = load(path)["frames"][0]["records"][0]
    actual = run(path)[0].records
    identical(actual, [record_from_json(tick)])
    for column, wrong in [("max_stake", "250.50"), ("price", 2), ("source_ts", "2025-06-11T17:55:30+01:00")]:
        with pytest.raises(AssertionError, match=column):
            identical(actual, [record_from_json({**tick, "values": {**tick["values"], column: wrong}})])
