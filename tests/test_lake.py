"""The lake's decimal limit where values enter: the adapters' to_decimal refuses what DECIMAL(38, 18)
cannot hold exactly, so the frame is quarantined with the reason instead of a value being rounded later."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest

from tests import test_oddspapi
from tests.feedkit import adapter
from warehouse import lake
from warehouse.feeds.contract import FrameError
from warehouse.feeds.derive import QUARANTINED, derive
from warehouse.feeds.values import to_decimal, to_float, to_int

FITS = ["99999999999999999999.999999999999999999", "-99999999999999999999.999999999999999999",
        "0.000000000000000001", "1234567890.12345", "98765432.10", "1.5000000000000000000000", "1E+19", "0E-40"]
UNFIT = ["100000000000000000000", "1e30", "0.0000000000000000001", "1.0000000000000000001", "NaN", "-Infinity"]


@pytest.mark.parametrize("text", FITS)
def test_a_decimal_the_lake_holds_enters_unchanged(text: str) -> None:
    assert lake.decimal_fits(Decimal(text))
    assert to_decimal(text) == Decimal(text)


@pytest.mark.parametrize("text", UNFIT)
def test_a_decimal_the_lake_cannot_hold_is_refused_where_it_enters(text: str) -> None:
    assert not lake.decimal_fits(Decimal(text))
    with pytest.raises(FrameError, match=r"(20 integer and 18 fractional digits|finite number)"):
        to_decimal(text)


def test_floats_and_integers_are_not_held_to_the_decimal_limit() -> None:
    assert to_decimal(1e30 / 1e30) == Decimal("1.0")
    with pytest.raises(FrameError, match="20 integer and 18 fractional digits"):
        to_decimal(1e-20)  # a JSON number: parsed as a float, its shortest text is 1e-20
    assert to_float("1e30") == 1e30 and to_int("2147483647") == 2**31 - 1  # double / integer columns
    with pytest.raises(FrameError, match="integer from -2147483648 to 2147483647 expected"):
        to_int("2147483648")  # beyond what an integer column holds, in PostgreSQL and in the lake


def test_a_frame_with_a_value_the_lake_cannot_hold_is_quarantined_with_the_reason() -> None:
    frame = test_oddspapi.SEED[1].replace('"limit": null', '"limit": 1e30').encode()
    derived = derive(adapter("oddspapi-ws"), "oddspapi-ws", frame, received_at=datetime.now(UTC), source="oddspapi",
                     connection_id=uuid4(), seq=1, event_id=None, max_frame_bytes=1 << 20)
    assert derived.raw.kind == QUARANTINED and derived.raw.payload == frame  # the frame is kept as it came
    (quarantine,) = derived.records
    assert "at most 20 integer and 18 fractional digits" in quarantine.reason and "1e+30" in quarantine.reason
