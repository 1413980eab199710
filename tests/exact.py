"""Exact comparison for tests: equal values of the same types."""

from __future__ import annotations

import math
from datetime import datetime
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
