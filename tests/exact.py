"""Comparing values in tests: exactly (equal values of the same types), or as two engines agree."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def identical(a: Any, b: Any, where: str = "") -> None:
    """Equal, and of the same types: a Decimal keeps its exponent, a datetime its offset, 2.0 is not 2,
    -0.0 is not 0.0, and NaN is NaN."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} {a!r} != {type(b).__name__} {b!r}"
    if isinstance(a, tuple | list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}: {a!r} != {b!r}"
        names = getattr(a, "_fields", range(len(a)))
        for name, x, y in zip(names, a, b, strict=True):
            identical(x, y, f"{where}.{name}" if isinstance(name, str) else f"{where}[{name}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, Decimal):
        assert str(a) == str(b), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, datetime):
        assert (a, a.utcoffset()) == (b, b.utcoffset()), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, float):
        same = (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
        assert same, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def comparable(value: Any) -> Any:
    """A value in a form PostgreSQL and DuckDB agree on: UTC datetimes, floats to 12 digits, lists as tuples."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, float | Decimal):
        return round(float(value), 12)
    if isinstance(value, list | tuple):
        return tuple(comparable(v) for v in value)
    return value
