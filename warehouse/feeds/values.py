"""Turning vendor JSON values into record fields, or a FrameError that says what was wrong.

Shared by every adapter, so every feed treats timestamps, decimals, ids and booleans alike. Numbers
arrive exact (warehouse.exactjson: an int, a float that is the wire's number, or the Decimal of its
text; CKEX sends text): each column gets the number the vendor sent, or the frame is refused —
beyond what the lake holds (warehouse.lake), not finite, or no price (`above`). docs/values.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from warehouse.feeds.contract import FrameError
from warehouse.lake import DECIMAL_LIMIT, DOUBLE_LIMIT, INTEGER_LIMIT, INTEGER_MAX, INTEGER_MIN, decimal_fits

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = Decimal("0.000001")


# The last timestamp text parsed and its value: the rows of one frame mostly share their time, and the
# same datetime for all of them is also encoded once by the writer (store/connection.py).
_last_time: tuple[str | None, datetime] = (None, _EPOCH)


def parse_time(value: Any) -> datetime | None:
    """Vendor timestamps: ISO-8601 (with or without zone: none means UTC) or epoch seconds."""
    global _last_time
    if type(value) is str:  # the common case first
        if value == _last_time[0]:
            return _last_time[1]
        try:
            parsed = datetime.fromisoformat(value)  # 3.11 takes "Z" and "+00:00" alike
        except ValueError:
            raise FrameError(f"timestamp expected, got {_shown(value)}") from None
        if not parsed.tzinfo:
            parsed = parsed.replace(tzinfo=UTC)
        _last_time = (value, parsed)
        return parsed
    if value is None:
        return None
    if type(value) is int:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):
            raise FrameError(f"timestamp out of range: {_shown(value)}") from None
    if type(value) is float or isinstance(value, Decimal):
        # Rounded to the microsecond from the number sent, not from a double near it (half to even,
        # as datetime.fromtimestamp rounds).
        try:
            micros = _number(value).quantize(_MICROSECOND, ROUND_HALF_EVEN).scaleb(6)
            return _EPOCH + timedelta(microseconds=int(micros))
        except (ArithmeticError, ValueError, OverflowError):  # InvalidOperation: more digits than a time has
            raise FrameError(f"timestamp out of range: {_shown(value)}") from None
    raise FrameError(f"timestamp expected, got {_shown(value)}")


# The Decimal of each number seen lately (a feed sends the same few stakes and prices again and again,
# and making and checking one costs ~0.7 µs), per type: 1000 and 1000.0 are equal keys but different
# Decimals (the scale is stored). Zero is never kept (0.0 and -0.0 are equal keys too); a number refused
# never is; at most this many, of texts this short, forgotten all at once when full.
_DECIMALS: dict[type, dict[Any, Decimal]] = {int: {}, float: {}, str: {}}
_REMEMBERED, _REMEMBERED_CHARS = 4096, 24


def to_decimal(value: Any, *, above: int | None = None) -> Decimal | None:
    """Exact decimal from a JSON number or a numeric string (CKEX sends strings), refused unless the
    Parquet lake's decimal holds it exactly: a value is stored as sent, or not at all. `above`: a
    price, which must be greater."""
    if value is None:  # the common case (most prices come without a stake limit): no calls
        return None
    known = _DECIMALS.get(type(value))
    number = known.get(value) if known is not None else None
    if number is None:
        number = _number(value)
        if not decimal_fits(number):
            raise FrameError(f"number with {DECIMAL_LIMIT} expected, got {_shown(value)}")
        if known is not None and number and (type(value) is not str or len(value) <= _REMEMBERED_CHARS):
            if len(known) >= _REMEMBERED:
                known.clear()
            known[value] = number
    if above is not None and not number > above:
        raise FrameError(_not_above(above, value))
    return number


def _number(value: Any) -> Decimal:
    """The exact value of a JSON number (a float from the decoder is the wire's number: its repr says
    which) or of numeric text; FrameError for anything else, NaN and infinity included."""
    kind = type(value)
    if kind is int:  # exact already; no detour through text
        return Decimal(value)
    if kind is Decimal:
        result = value
    elif kind is float:
        result = Decimal(repr(value))
    elif kind is str:
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise FrameError(f"number expected, got {_shown(value)}") from None
    else:
        raise FrameError(f"number expected, got {_shown(value)}")
    if not result.is_finite():
        raise FrameError(f"finite number expected, got {_shown(value)}")
    return result  # type: ignore[no-any-return]  # a Decimal: checked above


def to_float(value: Any, *, above: int | None = None) -> float | None:
    """A double precision column's value: the nearest double to the number sent (a price of 20 digits
    keeps 17), refused where there is none — beyond ±1.8e308 or so near 0 that it would be 0 — rather
    than stored as ±infinity or 0. `above`: a price (odds), which must be greater."""
    kind = type(value)
    if kind is float:  # the common case first: the decoder's floats are finite, but this may come from anywhere
        if value - value != 0:
            raise FrameError(f"finite number expected, got {_shown(value)}")
        result: float = value
    elif value is None:
        return None
    elif kind is int:
        try:
            result = float(value)
        except OverflowError:
            raise FrameError(f"number {DOUBLE_LIMIT} expected, got {_shown(value)}") from None
    else:
        number = _number(value)
        result = float(number)
        if result - result != 0 or (not result and number):
            raise FrameError(f"number {DOUBLE_LIMIT} expected, got {_shown(value)}")
    if above is not None and not result > above:
        raise FrameError(_not_above(above, value))
    return result


def _not_above(above: int, value: Any) -> str:
    return f"{'decimal odds' if above == 1 else 'price'} above {above} expected, got {_shown(value)}"


_SHOWN_DIGITS = 40


def _shown(value: Any) -> str:
    """A value in a reason as the frame had it: text in quotes, a number as its digits (the first of them
    when there are many: 1e400 decodes as an integer of 401 digits)."""
    text = str(value) if type(value) is Decimal else repr(value)
    if len(text) > _SHOWN_DIGITS and type(value) in (int, Decimal):
        return f"{text[:_SHOWN_DIGITS]}… ({len(text.lstrip('-'))} digits)"
    return text


def to_int(value: Any) -> int | None:
    """An integer column's value: a whole number within what the lake's INTEGER holds."""
    if type(value) is int:  # the common case: no Decimal made
        if not INTEGER_MIN <= value <= INTEGER_MAX:
            raise FrameError(f"integer {INTEGER_LIMIT} expected, got {_shown(value)}")
        return value
    if value is None:
        return None
    number = _number(value)
    if not INTEGER_MIN <= number <= INTEGER_MAX:  # before int(): "1e999999" is a short text
        raise FrameError(f"integer {INTEGER_LIMIT} expected, got {_shown(value)}")
    if number != number.to_integral_value():
        raise FrameError(f"integer expected, got {_shown(value)}")
    return int(number)


def to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise FrameError(f"true/false expected, got {_shown(value)}")


def to_text(value: Any) -> str | None:
    """Vendor ids arrive as strings or numbers; they are stored as text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"id expected, got {_shown(value)}")


def obj(value: Any, *where: str) -> dict[str, Any]:
    """`value` if it is a JSON object; else FrameError naming the path (its parts are joined with
    "." only then: this runs for every object of every frame)."""
    if type(value) is not dict:
        raise FrameError(f"{'.'.join(where)}: object expected, got {type(value).__name__}")
    return value
