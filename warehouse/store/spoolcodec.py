"""One spool entry as bytes and back: the batch id and its units, readable by later versions.

Format 2 (magic `OWS2`) describes itself. An entry is JSON, column by column:

    {"batch": "<uuid>",
     "tables": [{"table": "raw_messages", "columns": ["received_at", ...], "codecs": ["time", ...],
                 "values": [[<received_at of row 1>, <of row 2>, ...], [<source of row 1>, ...], ...]},
                {"table": "price_ticks", ...}],
     "units": [[0, 1, 1], [0, 1, 1], [-1, 2], ...]}

Each unit lists the tables of its rows by index into `tables`: first its raw frame's (-1: none),
then its derived records' in order; each table's rows are taken in turn. Records are written by
TABLE NAME (`records.TABLE_OF`; raw frames as `raw_messages`) and read back by column name, so a
later version may rename record classes, reorder fields, or add fields with a default. Each entry
names its tables' columns and how each column's values are written (`codecs`), so a reader never
depends on its own annotations to rebuild a value:

    json     plain JSON as is (text, numbers, booleans, jsonb values)
    time     datetime as ISO 8601 text: offset and microseconds kept (naive stays naive)
    date     date as ISO 8601 text
    decimal  Decimal as text: exact, exponent kept ("1.50" stays "1.50")
    uuid     UUID as text
    bytes    bytes as UTF-8 text (the raw frame's JSON text), else {"base64": "..."}

A null is None whatever the codec. The payload is one dialect byte and the JSON text: `J` is
strict JSON (orjson writes and reads it: the fast path); `X` is strict JSON with exact numbers
(warehouse.exactjson), for an entry whose jsonb values hold a number no double is (a Decimal) or
an integer beyond 64 bits, which orjson would round or refuse; `P` is Python's json dialect, used
only for what neither writes exactly (a NaN or infinite float in a float column, text that is not
valid Unicode), which no adapter gives. So every value comes back exactly. jsonb values are kept
the way the writer's jsonb encoder stores them (a Decimal inside one as a number, a UUID as text,
a NaN as null): what replays is what a direct write would have stored.

Columns, not rows, because it is fast: records are transposed and rebuilt by C loops (zip, map),
so the format keeps up with pickle (bench/spool.py).

An entry naming a table this version does not know, or a column its record no longer has, or one
it cannot parse, raises `Unreadable`: the spool keeps it for a human rather than guess.

Format 1 (magic `OWS1`, a pickle of the record NamedTuples) was written by the versions before
this one. It is still READ, through an allow-list unpickler, so a spool left by the previous
version replays after an upgrade; it is never written. Remove `_decode_pickle` once no OWS1
spool can be left (a release or two).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import operator
import pickle
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache, partial
from itertools import repeat
from typing import Any
from uuid import UUID

import orjson

from warehouse import exactjson, records

MAGIC_PICKLE = b"OWS1"  # read only
MAGIC = b"OWS2"

STRICT = b"J"  # orjson's strict JSON
EXACT = b"X"  # strict JSON, numbers exact (warehouse.exactjson): Decimals and integers of any size in jsonb values
PYTHON = b"P"  # Python's json: integers of any size, NaN and Infinity

RAW_TABLE = "raw_messages"
NO_FRAME = -1  # a unit without a raw frame (e.g. collector events)

Unit = tuple[Any, Sequence[Any]]  # (RawMessage | None, derived records)
Entry = tuple[UUID, list[Unit]]


class Unreadable(ValueError):
    """This version cannot read the entry (a newer format, an unknown table or column, bad data)."""


# -- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """How one record type is written: its table, columns and codecs, and its float columns."""

    table: str
    columns: list[str]
    codecs: list[str]
    floats: tuple[int, ...]  # a NaN or infinity there needs the exact dialect (orjson writes null)
    decimals: tuple[int, ...]  # written as text; any other Decimal is inside a jsonb value


def _codec(annotation: Any) -> str:
    options = [a for a in typing.get_args(annotation) or (annotation,) if a is not type(None)]
    kind = options[0] if len(options) == 1 else None
    if kind is dt.datetime:
        return "time"
    if kind is dt.date:
        return "date"
    return {Decimal: "decimal", UUID: "uuid", bytes: "bytes"}.get(kind, "json")  # type: ignore[arg-type]


def _shape(cls: type[Any], table: str) -> _Shape:
    hints = typing.get_type_hints(cls)
    fields: tuple[str, ...] = cls._fields
    floats = tuple(i for i, name in enumerate(fields) if float in (typing.get_args(hints[name]) or (hints[name],)))
    codecs = [_codec(hints[name]) for name in fields]
    return _Shape(table, list(fields), codecs, floats, tuple(i for i, c in enumerate(codecs) if c == "decimal"))


_TABLE_OF: dict[type[Any], str] = {records.RawMessage: RAW_TABLE, **records.TABLE_OF}
_SHAPES: dict[type[Any], _Shape] = {cls: _shape(cls, table) for cls, table in _TABLE_OF.items()}
_not_none = partial(operator.is_not, None)


def _finite(column: Sequence[Any]) -> bool:
    """No NaN or infinity among the floats of `column` (a sum of finite floats that overflows
    only costs the slower dialect)."""
    try:
        total = sum(filter(_not_none, column))
    except TypeError:  # not numbers: the exact dialect writes whatever it is
        return False
    return bool(total == total and total - total == 0)


def _default(value: Any, decimals: list[int] | None = None) -> Any:
    """What orjson does not write itself; anything else makes the entry take the exact dialect.
    `decimals` counts the Decimals met."""
    if isinstance(value, Decimal):
        if decimals is not None:
            decimals[0] += 1
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, UUID):  # a subclass (asyncpg's)
        return str(value)
    if isinstance(value, dt.date):  # a subclass (a patched datetime)
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a spool value")


def _default_python(value: Any) -> Any:
    try:
        return _default(value)
    except TypeError:
        # As the writer's jsonb encoder stores it, but for a Decimal inside a jsonb value (a number
        # there): this dialect is only for a NaN price or a lone surrogate, which no adapter gives.
        return str(value)


def encode(batch_id: UUID, units: Sequence[Unit]) -> bytes:
    """The payload of one entry (without the frame header)."""
    rows: dict[type[Any], list[Any]] = {}  # record type → its records, in order (first seen first)
    index: dict[type[Any], int] = {}

    def ref(record: Any) -> int:
        cls = type(record)
        position = index.get(cls)
        if position is None:
            if cls not in _SHAPES:
                raise TypeError(f"{cls.__name__} is not a record type")
            position = index[cls] = len(index)
            rows[cls] = []
        rows[cls].append(record)
        return position

    layout = [[NO_FRAME if raw is None else ref(raw), *map(ref, derived)] for raw, derived in units]
    tables = []
    exact = False
    decimals = 0  # in the decimal columns: any other Decimal the encoder meets is inside a jsonb value
    for cls, records_of in rows.items():
        shape = _SHAPES[cls]
        columns = list(zip(*records_of, strict=True))
        exact = exact or not all(_finite(columns[i]) for i in shape.floats)
        decimals += sum(len(columns[i]) - columns[i].count(None) for i in shape.decimals)
        tables.append({"table": shape.table, "columns": shape.columns, "codecs": shape.codecs, "values": columns})
    document = {"batch": str(batch_id), "tables": tables, "units": layout}
    if not exact:
        met = [0]
        try:
            text = orjson.dumps(document, default=partial(_default, decimals=met), option=orjson.OPT_NON_STR_KEYS)
            if met[0] == decimals:
                return STRICT + text
        except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a lone surrogate, ...
            pass
        try:
            return EXACT + exactjson.dumps(_decimals_as_text(document), default=_default)
        except TypeError:  # a lone surrogate
            pass
    return PYTHON + json.dumps(document, default=_default_python, separators=(",", ":")).encode()


def _decimals_as_text(document: dict[str, Any]) -> dict[str, Any]:
    """The document with its decimal columns' values as text, so that exactjson writes only the Decimals
    inside jsonb values as numbers."""
    tables = []
    for table in document["tables"]:
        values = [[None if v is None else str(v) for v in column] if codec == "decimal" else column
                  for codec, column in zip(table["codecs"], table["values"], strict=True)]
        tables.append({**table, "values": values})
    return {**document, "tables": tables}


# -- reading -----------------------------------------------------------------------------------


def decode(magic: bytes, payload: bytes) -> Entry:
    """The entry of a frame whose CRC matched; Unreadable when this version cannot read it."""
    if magic == MAGIC_PICKLE:
        return _decode_pickle(payload)
    if magic != MAGIC:
        raise Unreadable(f"format {magic!r} is newer than this version reads")
    dialect, text = payload[:1], payload[1:]
    try:
        if dialect == STRICT:
            document = orjson.loads(text)
        elif dialect == EXACT:
            document = exactjson.loads(text)
        elif dialect == PYTHON:
            document = json.loads(text)
        else:
            raise Unreadable(f"unknown dialect {dialect!r}")
        tables = [_builder(t["table"], tuple(t["columns"]), tuple(t["codecs"])) for t in document["tables"]]
        made = [iter(builder.build(t["values"])) for builder, t in zip(tables, document["tables"], strict=True)]
        take = [rows.__next__ for rows in made]
        frames = {NO_FRAME} | {i for i, builder in enumerate(tables) if builder.table == RAW_TABLE}
        units: list[Unit] = []
        for refs in document["units"]:
            frame = refs[0]
            if frame not in frames:
                raise Unreadable(f"a unit's frame refers to table {frame!r}, not to {RAW_TABLE}")
            units.append((None if frame == NO_FRAME else take[frame](), [take[t]() for t in refs[1:]]))
        if any(next(rest, None) is not None for rest in made):
            raise Unreadable("rows that belong to no unit")
        return UUID(document["batch"]), units
    except Unreadable:
        raise
    except StopIteration:
        raise Unreadable("a unit refers to more rows than its table holds") from None
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError) as exc:
        raise Unreadable(f"damaged entry: {type(exc).__name__}: {exc}") from None


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return base64.b64decode(value["base64"], validate=True)


# codec → (the decoder of a value, a faster one for a whole column that may refuse with TypeError)
_DECODERS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]] | None] = {
    "json": None,
    "time": (dt.datetime.fromisoformat, dt.datetime.fromisoformat),
    "date": (dt.date.fromisoformat, dt.date.fromisoformat),
    "decimal": (Decimal, Decimal),
    "uuid": (UUID, lru_cache(maxsize=1024)(UUID)),  # connection ids repeat in every frame of a connection
    "bytes": (_bytes, str.encode),  # base64 (not UTF-8) is rare
}


class _Builder:
    """Rebuilds one table's rows, written column by column, as this version's record type."""

    def __init__(self, table: str, columns: tuple[str, ...], codecs: tuple[str, ...]) -> None:
        classes = {name: cls for cls, name in _TABLE_OF.items()}
        cls = classes.get(table)
        if cls is None:
            raise Unreadable(f"table {table!r} is unknown to this version")
        if len(codecs) != len(columns):
            raise Unreadable(f"table {table}: {len(columns)} columns but {len(codecs)} codecs")
        fields: tuple[str, ...] = cls._fields
        gone = [c for c in columns if c not in fields]
        if gone:
            raise Unreadable(f"column {gone[0]!r} of {table} is not in this version's {cls.__name__}")
        defaults: dict[str, Any] = cls._field_defaults
        missing = [f for f in fields if f not in columns and f not in defaults]
        if missing:
            raise Unreadable(f"{table} rows lack column {missing[0]!r}, which this version's {cls.__name__} needs")
        unknown = [c for c in codecs if c not in _DECODERS]
        if unknown:
            raise Unreadable(f"codec {unknown[0]!r} of {table} is unknown to this version")
        self.table = table
        self._decoders = [_DECODERS[c] for c in codecs]
        # Where each field of the record is among the written columns (None: not written, its default).
        self._pick = None if columns == fields else [columns.index(f) if f in columns else None for f in fields]
        self._defaults = [defaults.get(f) for f in fields]
        self._new = partial(tuple.__new__, cls)  # what cls._make does, without a Python call per row

    def build(self, values: list[list[Any]]) -> list[Any]:
        if len(values) != len(self._decoders):
            raise Unreadable(f"{self.table}: {len(values)} columns of values for {len(self._decoders)} columns")
        columns: list[Iterable[Any]] = [column if decoder is None else _decoded(decoder, column)
                                        for decoder, column in zip(self._decoders, values, strict=True)]
        count = len(values[0]) if values else 0
        if self._pick is not None:
            columns = [repeat(d, count) if i is None else columns[i] for i, d in zip(self._pick, self._defaults,
                                                                                   strict=True)]
        rows: Iterator[tuple[Any, ...]] = zip(*columns, strict=True)
        return list(map(self._new, rows))


def _decoded(decoders: tuple[Callable[[Any], Any], Callable[[Any], Any]], column: list[Any]) -> list[Any]:
    decoder, fast = decoders
    if None not in column:
        try:
            return list(map(fast, column))
        except TypeError:
            pass
    return [None if v is None else decoder(v) for v in column]


_builders: dict[tuple[str, tuple[str, ...], tuple[str, ...]], _Builder] = {}


def _builder(table: str, columns: tuple[str, ...], codecs: tuple[str, ...]) -> _Builder:
    key = (table, columns, codecs)
    builder = _builders.get(key)
    if builder is None:
        builder = _builders[key] = _Builder(*key)
    return builder


# -- format 1, read only -----------------------------------------------------------------------

_ALLOWED = {
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timezone"), ("datetime", "timedelta"),
    ("decimal", "Decimal"), ("uuid", "UUID"), ("uuid", "SafeUUID"),
} | {("warehouse.records", cls.__name__) for cls in _TABLE_OF}


class _RecordUnpickler(pickle.Unpickler):
    """A spool file can never make the collector import or run anything but the record types."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"spool entry refers to {module}.{name}, which is not a record type")
        return super().find_class(module, name)


def _decode_pickle(payload: bytes) -> Entry:
    try:
        entry: Entry = _RecordUnpickler(io.BytesIO(payload)).load()
    except Exception as exc:  # an unpickler can raise almost anything on crafted input
        raise Unreadable(f"format 1 entry: {type(exc).__name__}: {exc}") from None
    return entry
