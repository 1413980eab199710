"""Rows in the one shape `replay --check` compares: derived again (from records) or stored (from
PostgreSQL or Parquet), as Arrow tables with the same columns and canonical values.

Canonical: timestamps as UTC microseconds, doubles as doubles, uuids as their text, decimals as
plain text without trailing zeros (1.50 = 1.5, so the export's fixed scale does not matter), and
JSON as text with sorted keys and exact numbers (a value, not a spelling: PostgreSQL's jsonb orders
keys its own way). Numbers inside JSON that PostgreSQL spells differently (a float 1e16 as
10000000000000000, -0.0 as 0.0) are matched by `deep_json`, applied only to the few rows the
canonical text leaves unmatched. (Frames are stored as their text, so they decode as they came.)

JSON is compared in two steps, so that stored JSON is not decoded where it matches. First as text:
a stored value is PostgreSQL's text of it (jsonb's own spelling), and a derived value is written in
that spelling (`stored_spelling`), so a row derived as stored matches without its stored text being
read by Python at all. The rows left unmatched are then compared again with their JSON canonical on
both sides (`canonical_select`), as before. Equal text is an equal value, so a row matched in the
first step is one the canonical comparison matches too, and the verdicts are the canonical rule's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Context, Decimal
from operator import itemgetter
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import BigInteger, Boolean, Float, Integer, Numeric
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID

from warehouse import exactjson, schema
from warehouse.records import TABLE_OF, Record
from warehouse.replay.postgres import UTC_MICROS

RAW_KINDS = "raw_messages"  # the frame's kind is derived too: compared as a table of (raw_id, kind)
TABLES: tuple[str, ...] = (RAW_KINDS, *dict.fromkeys(TABLE_OF.values()))
_ARROW = {"ts": UTC_MICROS, "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
_DUCKDB = {"ts": "TIMESTAMPTZ", "float": "DOUBLE", "int": "BIGINT", "bool": "BOOLEAN"}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # ts, float, int, bool, text, uuid, num (decimal), json, frame (text, JSON where it is)

    @property
    def arrow(self) -> pa.DataType:
        return _ARROW.get(self.kind, pa.string())

    @property
    def duckdb(self) -> str:
        return _DUCKDB.get(self.kind, "VARCHAR")

    def compared(self, alias: str = "") -> str:
        """The column in the comparison: decimals without trailing zeros, whatever their scale."""
        ref = f"{alias}{self.name}"
        if self.kind == "num":
            return f"CASE WHEN {ref} LIKE '%.%' THEN rtrim(rtrim({ref}, '0'), '.') ELSE {ref} END AS {self.name}"
        return f"{ref} AS {self.name}" if alias else ref


def _kind(column: Any) -> str:
    kind = column.type
    for python_type, name in ((TIMESTAMP, "ts"), (JSONB, "json"), (UUID, "uuid"), (Float, "float"),
                              (Numeric, "num"), (BigInteger, "int"), (Integer, "int"), (Boolean, "bool")):
        if isinstance(kind, python_type):
            return name
    return "text"


COLUMNS: dict[str, tuple[Column, ...]] = {
    table: tuple(Column(c.name, _kind(c)) for c in schema.metadata.tables[table].columns)
    for table in TABLES if table != RAW_KINDS
} | {RAW_KINDS: (Column("raw_id", "int"), Column("kind", "text"))}
# A quarantined frame's text: replay has it from the stored payload, which jsonb keeps as a value,
# not as it was spelled. So it is compared as JSON where it is JSON (what fits the size kept).
COLUMNS["quarantine"] = tuple(Column(c.name, "frame") if c.name == "frame" else c for c in COLUMNS["quarantine"])


def canonical_json(value: Any) -> str:
    """A Python value as the writer would store it, in sorted-key JSON text."""
    try:
        return exactjson.dumps(value, orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # keys that are not strings (the writer allows them): the slower path
        return exactjson.dumps(value, orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def canonical_stored_json(text: str) -> str:
    return exactjson.dumps(exactjson.loads(text), orjson.OPT_SORT_KEYS).decode()


# Marks a derived JSON text that is not in PostgreSQL's spelling but canonical (`canonical_json`):
# no text of jsonb's begins with it, so such a row only matches in the canonical step.
UNSPELLED = "~"
# Keys tuple of an object → (its values in jsonb's key order, the object's text with %b for each
# value), or None when a key is no string. A feed's objects have a few shapes: each is worked out once.
Shape = tuple[Callable[[dict[str, Any]], tuple[Any, ...]], bytes]
_SHAPES: dict[tuple[Any, ...], Shape | None] = {}
_SHAPES_KEPT = 4096
_INDENTED = re.compile(rb"\n *")


def _jsonb_order(key: str) -> tuple[int, bytes]:
    """jsonb keeps an object's keys shortest first (in UTF-8 bytes), those of a length bytewise."""
    data = key.encode()
    return len(data), data


def _shape(keys: tuple[Any, ...]) -> Shape | None:
    if not all(type(key) is str for key in keys):
        return None
    ordered = sorted(keys, key=_jsonb_order)
    return itemgetter(*ordered), b"{" + b", ".join(orjson.dumps(key).replace(b"%", b"%%") + b": %b"
                                                   for key in ordered) + b"}"


def _in_jsonb_order(value: Any) -> Any:
    """The value with every object's keys in jsonb's order (TypeError for a key that is no string)."""
    kind = type(value)
    if kind is dict:
        if not all(type(key) is str for key in value):
            raise TypeError("a key that is no string")
        return {key: _in_jsonb_order(value[key]) for key in sorted(value, key=_jsonb_order)}
    if kind is list or kind is tuple:
        return [_in_jsonb_order(item) for item in value]
    return value


def stored_spelling(value: Any) -> str:
    """A derived JSON value in the text PostgreSQL writes for it as jsonb (keys in jsonb's order,
    ", " and ": " between items), where orjson writes each part itself; else UNSPELLED and its
    canonical text (Decimals, integers beyond 64 bits, keys that are no string: `canonical_json`'s
    cases). Either way `canonical_spelled` of the result is `canonical_json(value)`."""
    try:
        if type(value) is dict and len(value) > 1:
            keys = tuple(value)
            shape = _SHAPES.get(keys)
            if shape is None and keys not in _SHAPES:
                if len(_SHAPES) >= _SHAPES_KEPT:
                    _SHAPES.clear()
                shape = _SHAPES[keys] = _shape(keys)
            if shape is not None:
                values, spelled = shape
                # The values one to a line: none holds a container with items (those are indented
                # further) and no text a line break (JSON escapes it), so lines are the values.
                lines = orjson.dumps(values(value), option=orjson.OPT_INDENT_2)
                if b"\n    " not in lines:
                    return (spelled % tuple(lines[4:-2].split(b",\n  "))).decode()
        # Indented, every line break and indent is orjson's (a text's line break is escaped): on
        # one line, with jsonb's ", " between items (orjson writes ": " already).
        lines = orjson.dumps(_in_jsonb_order(value), option=orjson.OPT_INDENT_2)
        return _INDENTED.sub(b"", lines.replace(b",\n", b", \n")).decode()
    except (TypeError, RecursionError):  # orjson writes it not itself (a Decimal, say): canonical then
        return UNSPELLED + canonical_json(value)


def canonical_spelled(text: str) -> str:
    """The canonical text of a `stored_spelling`."""
    return text[len(UNSPELLED):] if text.startswith(UNSPELLED) else canonical_stored_json(text)


# Enough digits for any number exactjson decodes (4,300 for an integer), so none is rounded here.
_EVERY_DIGIT = Context(prec=10_000)


def deep_json(text: str) -> str:
    """Canonical JSON in which every number is in one spelling, its value's shortest (100, 100.0 and
    1E+2 alike; 1.50 and 1.5; -0.0 and 0): PostgreSQL writes a number its own way."""

    def walk(value: Any) -> Any:
        kind = type(value)
        if kind is int or kind is float or kind is Decimal:
            number = Decimal(repr(value)) if kind is float else Decimal(value)  # a float is its repr's number
            return orjson.Fragment(str(number.normalize(_EVERY_DIGIT)) if number else "0")
        if kind is dict:
            return {key: walk(item) for key, item in value.items()}
        if kind is list:
            return [walk(item) for item in value]
        return value

    return orjson.dumps(walk(exactjson.loads(text)), option=orjson.OPT_SORT_KEYS).decode()


def frame_text(text: str) -> str:
    """A quarantined frame's text: canonical JSON if it is JSON, else as it is."""
    try:
        return canonical_stored_json(text)
    except exactjson.NotJSON:
        return text


def _values(kind: str, values: Iterable[Any]) -> list[Any] | Iterable[Any]:
    if kind == "frame":
        return [None if v is None else frame_text(v) for v in values]
    if kind == "json":  # in the spelling PostgreSQL stores: compared first as text (the module's docstring)
        return [None if v is None else stored_spelling(v) for v in values]
    if kind == "num":
        return [None if v is None else format(v, "f") for v in values]
    if kind == "uuid":
        return [None if v is None else str(v) for v in values]
    return values


class RowsByTable:
    """Records derived again, gathered per table until turned into Arrow.

    A frame's kind is compared as a table of (raw_id, kind) on each side; a frame whose kind is the
    one stored gives the same row on both sides, which matches, so such a frame is only counted
    (`same_kinds`): only frames whose kind changed go to the comparison as rows."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.rows: defaultdict[type[Record], list[Record]] = defaultdict(list)
        self.ids: defaultdict[type[Record], list[int]] = defaultdict(list)
        self.kinds: tuple[list[int], list[str], list[str]] = ([], [], [])  # raw id, kind now, kind stored
        self.same_kinds = 0  # frames whose kind is the one stored
        self.count = 0

    def add(self, raw_id: int, kind: str, stored_kind: str, records: list[Record]) -> None:
        if kind == stored_kind:
            self.same_kinds += 1
        else:
            frame_ids, kinds, stored = self.kinds
            frame_ids.append(raw_id)
            kinds.append(kind)
            stored.append(stored_kind)
        rows, ids = self.rows, self.ids
        for record in records:
            cls = type(record)
            rows[cls].append(record)
            ids[cls].append(raw_id)
        self.count += 1 + len(records)

    def tables(self) -> tuple[dict[str, list[pa.Table]], pa.Table, int]:
        """(table → Arrow tables of the rows derived again, the stored kinds as RAW_KINDS (of the
        frames whose kind changed), how many frames kept their kind), and reset."""
        out: dict[str, list[pa.Table]] = defaultdict(list)
        frame_ids, kinds, stored = self.kinds
        out[RAW_KINDS].append(pa.table([pa.array(frame_ids, pa.int64()), pa.array(kinds, pa.string())],
                                       names=["raw_id", "kind"]))
        stored_kinds = pa.table([pa.array(frame_ids, pa.int64()), pa.array(stored, pa.string())],
                                names=["raw_id", "kind"])
        for cls, rows in self.rows.items():
            table = TABLE_OF.get(cls)
            if table is None:
                raise ValueError(f"an adapter returned a {cls.__name__}, which is not a record type")
            out[table].append(_arrow(table, cls, rows, self.ids[cls]))
        same = self.same_kinds
        self._reset()
        return out, stored_kinds, same


def _arrow(table: str, cls: type[Record], rows: list[Record], ids: list[int]) -> pa.Table:
    by_field = dict(zip(cls._fields, zip(*rows, strict=True), strict=True))
    arrays = []
    for column in COLUMNS[table]:
        values: Any = ids if column.name == "raw_id" else by_field[column.name]
        try:
            arrays.append(pa.array(_values(column.kind, values), column.arrow))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValueError(f"{table}.{column.name}: an adapter gives values PostgreSQL would not store as"
                             f" {column.duckdb} ({exc})") from None
    return pa.table(arrays, names=[c.name for c in COLUMNS[table]])


def stored_batch(table: str, batch: pa.RecordBatch, json: Callable[[str], str] | None = None,
                 frame: Callable[[str], str] | None = frame_text) -> pa.RecordBatch:
    """Rows (warehouse.replay.stored's shapes) with their JSON texts spelled by `json` and their
    frame texts by `frame` (None: as they are). Stored rows come into the comparison with their
    frame texts canonical and their JSON as stored (PostgreSQL's spelling: see the module's docstring)."""
    columns = list(batch.columns)
    for i, column in enumerate(COLUMNS[table]):
        spelled = json if column.kind == "json" else frame if column.kind == "frame" else None
        if spelled is not None:
            columns[i] = _respelled(columns[i], spelled)
    return pa.RecordBatch.from_arrays(columns, names=[c.name for c in COLUMNS[table]])


def _respelled(texts: pa.Array | pa.ChunkedArray, spelled: Callable[[str], str]) -> pa.Array:
    """Each text as `spelled` writes it. Each distinct text once: a selection's attrs, say, repeat
    with every price of it."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    encoded = pc.dictionary_encode(texts)
    return pc.take(pa.array([spelled(v) for v in encoded.dictionary.to_pylist()], pa.string()), encoded.indices)


# SQL functions of the comparison's DuckDB (`register`): texts made canonical, in SQL.
_FRAME_TEXT = "replay_frame_text"
_CANONICAL = {"stored": ("replay_canonical_json", canonical_stored_json),
              "derived": ("replay_canonical_spelled", canonical_spelled)}


def register(con: Any) -> None:
    """Make `stored_select` and `canonical_select` work on this DuckDB database: their functions."""
    from duckdb.sqltypes import VARCHAR

    def function(spelled: Callable[[str], str]) -> Callable[[pa.ChunkedArray], pa.Array]:
        return lambda texts: _respelled(texts, spelled)  # DuckDB counts a function's parameters: one

    for name, spelled in ((_FRAME_TEXT, frame_text), *_CANONICAL.values()):
        con.create_function(name, function(spelled), [VARCHAR], VARCHAR, type="arrow", side_effects=False)


def stored_select(table: str) -> str:
    """What `stored_batch` does, in SQL: the select list turning stored rows (stored.py's shapes,
    e.g. `Stored.derived_query`) into the shape compared first (`register` the functions first)."""
    return ", ".join(f"{_FRAME_TEXT}({c.name}) AS {c.name}" if c.kind == "frame" else c.name for c in COLUMNS[table])


def canonical_select(table: str, side: str) -> str:
    """The select list turning rows of one side ("derived" or "stored") as first compared into the
    canonical shape: JSON as canonical text (`register` the functions first)."""
    function = _CANONICAL[side][0]
    return ", ".join(f"{function}({c.name}) AS {c.name}" if c.kind == "json" else c.name for c in COLUMNS[table])
