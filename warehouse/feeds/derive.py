"""The one path from a frame to what is stored: its raw row, and its records or a quarantine row.

Live collection, resync and replay all call `derive`, so a frame gives the same rows either way
(the rules: docs/replay.md, "One path from frame to rows").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from warehouse import exactjson
from warehouse.feeds import contract
from warehouse.feeds.contract import Adapter, FrameError, Output, handle
from warehouse.records import (
    EVENT_ERROR,
    EVENT_RESET,
    EVENT_SNAPSHOT,
    EVENT_SUBSCRIBE,
    CollectorEvent,
    Quarantine,
    RawMessage,
    Record,
)

_tuple_new = tuple.__new__
QUARANTINE_TEXT = 64 * 1024  # keep at most this much of a quarantined frame's text
QUARANTINED = "quarantined"  # raw_messages.kind of a quarantined frame

# The collector_events row each control signal makes (a heartbeat makes none: the frame is enough).
CONTROL_EVENTS: dict[str | None, str] = {
    contract.SUBSCRIBED: EVENT_SUBSCRIBE,
    contract.RESET: EVENT_RESET,
    contract.INITIAL: EVENT_SNAPSHOT,
    contract.ERROR: EVENT_ERROR,
    contract.RETRY: EVENT_ERROR,
    contract.RETRY_LONG: EVENT_ERROR,
    contract.FATAL: EVENT_ERROR,
}


@dataclass(slots=True)
class Derived:
    """One frame's rows; `output` is None when the frame was quarantined."""

    raw: RawMessage
    records: list[Record] = field(default_factory=list)
    output: Output | None = None


def derive(adapter: Adapter, feed_kind: str, data: bytes, *, received_at: datetime, source: str,
           connection_id: UUID, seq: int, event_id: str | None, max_frame_bytes: int,
           kind: str | None = None, size: int | None = None) -> Derived:
    """`data` is the frame's JSON text as it is stored (decoded, secrets redacted). `kind`: the
    frame's kind when the caller knows it (a REST answer's), kept even if the frame is quarantined.
    `size`: the frame's size when `data` is only its start (an SSE event cut off as it arrived)."""
    size = len(data) if size is None else size
    if size > max_frame_bytes:
        reason = f"frame of {size} bytes exceeds max_frame_bytes ({max_frame_bytes})"
        return _quarantined(received_at, source, connection_id, seq, event_id, None, reason, data[:1024], kind)
    typed = getattr(adapter, "handle_text", None)  # the adapter's fast path for its commonest frames, if any
    output = typed(data, received_at) if typed is not None else None
    if output is None:
        try:
            message = exactjson.loads(data)  # numbers exact: a float only where it is the number sent
        except exactjson.NotJSON as exc:
            return _quarantined(received_at, source, connection_id, seq, event_id, None, str(exc), data, kind)
        try:
            output = handle(adapter, message, received_at)
        except FrameError as exc:
            return _quarantined(received_at, source, connection_id, seq, event_id, data,
                                f"does not fit the {feed_kind} schema: {exc}", data, kind)
    # RawMessage's fields in order; tuple.__new__ skips the keyword handling of its __new__ (every frame).
    raw = _tuple_new(RawMessage, (received_at, source, connection_id, seq, kind or output.frame_kind, data, event_id))
    event = None if output.control is None else control_event(output, received_at, source, connection_id)
    return Derived(raw, output.records if event is None else [*output.records, event], output)


def control_event(output: Output, received_at: datetime, source: str, connection_id: UUID) -> CollectorEvent | None:
    """The `collector_events` row of the frame's control signal, if it makes one."""
    event = CONTROL_EVENTS.get(output.control)
    if event is None:
        return None
    return CollectorEvent(received_at, source, connection_id, event, output.detail or {})


def undecodable(data: bytes, reason: str, *, received_at: datetime, source: str, connection_id: UUID, seq: int,
                event_id: str | None) -> Derived:
    """A frame the feed could not decode (e.g. not valid gzip): no JSON text to store, so its bytes go
    to quarantine (as text, invalid UTF-8 replaced) with the reason."""
    return _quarantined(received_at, source, connection_id, seq, event_id, None, f"cannot decode: {reason}", data,
                        None)


def _quarantined(received_at: datetime, source: str, connection_id: UUID, seq: int, event_id: str | None,
                 payload: bytes | None, reason: str, text: bytes, kind: str | None) -> Derived:
    raw = RawMessage(received_at, source, connection_id, seq, kind or QUARANTINED, payload, event_id)
    snippet = text[:QUARANTINE_TEXT].decode("utf-8", "replace").replace("\x00", "\\u0000")
    return Derived(raw, [Quarantine(received_at, source, connection_id, reason[:500], snippet)])
