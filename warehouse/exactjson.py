"""JSON text ↔ Python values with every number exact: what a vendor sent is what is stored.

Decoding (`loads`): an integer becomes an int of any size the decoder reads (4,300 digits); a
number with a fraction or an exponent becomes a float when that float IS the number — its shortest
text (`repr`) has the same value, as for 2.59, 250.5, 1e5 or 1e-5: nearly every number, decoded as
fast as a float — else an int if it is whole (1e400, 12345678901234567890.0) and otherwise the
Decimal of its text (1234567890.123456789012345678, 0.1234567890123456789, 1e-400). So any float in
a decoded frame is the wire's number, `Decimal(repr(f))` its exact value, no number ever becomes
±infinity or 0 on the way in, and a number decodes alike however it is spelled, except a whole
double (1e5 is 100000.0, 100000 is 100000) — so the text PostgreSQL writes back for a stored frame
(1e400 as 401 digits) decodes as the frame did. A number with a fraction or exponent beyond what
the warehouse keeps (`DIGITS`) makes the text refused, like text that is no JSON.

Encoding (`dumps`): what orjson writes itself, plus Decimals and integers beyond 64 bits as JSON
numbers (orjson writes neither), so a decoded value is stored as it came: a jsonb column holds the
same number the frame did. docs/values.md says what each column keeps and what is refused.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

import msgspec
import orjson

# A number written with a fraction or exponent must have fewer integer digits than this and at most
# this many fractional ones. PostgreSQL's jsonb takes more (131,071 and 16,383), but the text it writes
# back must decode again (replay reads the stored frame: 1e5000 comes back as 5,001 digits, beyond
# the 4,300 an integer may have), and a few bytes must not turn into many kilobytes of stored text.
DIGITS = 1000
# At most this many characters and no exponent: at most 15 significant digits within 1e-14..1e15, which a
# double holds exactly (DBL_DIG = 15), so the float is the number without checking.
_PLAIN = 15


class NotJSON(ValueError):
    """The text is no JSON, or holds a number beyond what the warehouse keeps; the message says which."""


def number(text: str) -> float | int | Decimal:
    """A JSON number with a fraction or exponent, from its text: the float if it is that number, else the
    int or Decimal. ValueError if it is beyond DIGITS."""
    if len(text) <= _PLAIN and "e" not in text and "E" not in text:  # the common case: no Decimal made
        return float(text)
    exact = Decimal(text)
    if (len(text) > DIGITS or "e" in text or "E" in text) and _beyond(exact):  # else it has fewer digits
        raise ValueError(f"number {text[:40]} has more than {DIGITS} digits before or after the point")
    double = float(text)
    if double - double == 0 and Decimal(repr(double)) == exact:  # finite, and the same number
        return double
    if exact == exact.to_integral_value():  # 1e400 is the integer PostgreSQL writes back: one type for both
        return int(exact)
    return exact


def _beyond(exact: Decimal) -> bool:
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)  # JSON has no NaN or infinity
    return bool(exact) and (exact.adjusted() >= DIGITS or exponent < -DIGITS)


class _Numbers(dict[str, float | int | Decimal]):
    """`number` of each text, remembered: a feed sends the same few prices again and again, and a text
    seen before costs the decoder one lookup in C instead of a call into Python (18 numbers of a Saba
    frame: ~1.9 µs of ~7). Bounded: short texts only, and forgotten all at once when full."""

    def __missing__(self, text: str) -> float | int | Decimal:
        value = number(text)  # ValueError for a number beyond DIGITS: never remembered
        if len(text) <= _REMEMBERED_CHARS:
            if len(self) >= _REMEMBERED:
                self.clear()
            self[text] = value
        return value


_REMEMBERED, _REMEMBERED_CHARS = 16384, 24
number_hook: Callable[[str], float | int | Decimal] = _Numbers().__getitem__
"""`number`, as msgspec's `float_hook` of every decoder that must give the values `loads` gives."""
_decode = msgspec.json.Decoder(float_hook=number_hook).decode


def loads(data: bytes | str) -> Any:
    """The value of JSON text, numbers exact (see the module's docstring); NotJSON with a one-line reason."""
    try:
        return _decode(data)
    except msgspec.ValidationError as exc:  # a number refused: by `number`, or an integer beyond 4,300 digits
        raise NotJSON(f"a number beyond what the warehouse keeps: {exc}") from None
    except msgspec.DecodeError as exc:
        raise NotJSON(f"not JSON: {exc}") from None
    except RecursionError:  # msgspec's depth limit is what is left of Python's stack: not the same everywhere
        return _deep(data)


_DEPTH_ROOM = 2048  # more than orjson's fixed 1,024 levels, whatever the stack held already


def _deep(data: bytes | str) -> Any:
    """A deeply nested text, decoded the same whether the stack was deep or shallow (live collection and
    replay call from different depths): refused beyond orjson's fixed depth limit, else decoded with room."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise NotJSON(f"not JSON: {exc}") from None
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _DEPTH_ROOM)
    try:
        return loads(data)
    finally:
        sys.setrecursionlimit(limit)


def _exact(item: Any, default: Callable[[Any], Any] = str) -> Any:
    if isinstance(item, Decimal) and item.is_finite():
        return orjson.Fragment(str(item))  # a JSON number, exactly (str writes no NaN for a finite one)
    return default(item)


def dumps(value: Any, option: int = orjson.OPT_NON_STR_KEYS, default: Callable[[Any], Any] | None = None) -> bytes:
    """JSON text of `value` with every number exact: orjson's, plus Decimals and integers beyond 64 bits
    as numbers. `option`: orjson's options (sorted keys, say); `default`: what any other type orjson does
    not write becomes (by default its text, as the writer always stored it). TypeError for what is no
    JSON (text that is not valid Unicode)."""
    exact = _exact if default is None else partial(_exact, default=default)
    try:
        return orjson.dumps(value, default=exact, option=option)
    except orjson.JSONEncodeError as exc:
        try:
            wide = _wide_integers(value)
        except RecursionError:
            raise exc from None
        if wide is value:  # no integer beyond 64 bits: something else orjson refuses
            raise
        return orjson.dumps(wide, default=exact, option=option)


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _wide_integers(value: Any) -> Any:
    """`value` with each integer orjson cannot write as a Fragment of its digits (the same object if none)."""
    kind = type(value)
    if kind is int or (isinstance(value, int) and kind is not bool):
        return value if _INT64_MIN <= value <= _UINT64_MAX else orjson.Fragment(str(value))
    if kind is dict:
        items = {key: _wide_integers(item) for key, item in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if kind is list or kind is tuple:
        items_ = [_wide_integers(item) for item in value]
        return value if all(a is b for a, b in zip(items_, value, strict=True)) else items_
    return value
