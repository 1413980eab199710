"""Turning vendor JSON values into record fields, or a FrameError that says what was wrong.

Shared by every adapter, so every feed treats timestamps, decimals, ids and booleans alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from warehouse.feeds.contract import FrameError
from warehouse.lake import DECIMAL_LIMIT, decimal_fits


def parse_time(value: Any) -> datetime | None:
    """Vendor timestamps: ISO-8601 (with or without zone: none means UTC) or epoch seconds."""
    if type(value) is str:  # the common case first
        try:
            parsed = datetime.fromisoformat(value)  # 3.11 takes "Z" and "+00:00" alike
        except ValueError:
            raise FrameError(f"timestamp expected, got {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FrameError(f"timestamp expected, got {value!r}")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):
            raise FrameError(f"timestamp out of range: {value!r}") from None
    raise FrameError(f"timestamp expected, got {value!r}")


def to_decimal(value: Any) -> Decimal | None:
    """Exact decimal from a JSON number or a numeric string (CKEX sends strings), refused unless the
    Parquet lake's decimal holds it exactly: a value is stored as sent, or not at all."""
    if value is None:  # the common case (most prices come without a stake limit): no calls
        return None
    number = _number(value)
    if number is not None and not decimal_fits(number):
        raise FrameError(f"number with {DECIMAL_LIMIT} expected, got {value!r}")
    return number


def _number(value: Any) -> Decimal | None:
    if type(value) is int:  # exact already; no detour through text
        return Decimal(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise FrameError(f"number expected, got {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise FrameError(f"number expected, got {value!r}") from None
    if not result.is_finite():
        raise FrameError(f"finite number expected, got {value!r}")
    return result


def to_float(value: Any) -> float | None:
    kind = type(value)
    if kind is float:  # the common case first: JSON numbers arrive as float or int
        if value != value or value in (float("inf"), float("-inf")):
            raise FrameError(f"finite number expected, got {value!r}")
        return value  # type: ignore[no-any-return]  # a float: checked above
    if kind is int:
        return float(value)
    if value is None:
        return None
    return float(_number(value))  # type: ignore[arg-type]


def to_int(value: Any) -> int | None:
    if value is None:
        return None
    number = _number(value)
    if number is None or number != number.to_integral_value():
        raise FrameError(f"integer expected, got {value!r}")
    return int(number)


def to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise FrameError(f"true/false expected, got {value!r}")


def to_text(value: Any) -> str | None:
    """Vendor ids arrive as strings or numbers; they are stored as text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"id expected, got {value!r}")


def obj(value: Any, *where: str) -> dict[str, Any]:
    """`value` if it is a JSON object; else FrameError naming the path (its parts are joined with
    "." only then: this runs for every object of every frame)."""
    if type(value) is not dict:
        raise FrameError(f"{'.'.join(where)}: object expected, got {type(value).__name__}")
    return value
