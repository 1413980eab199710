"""The text/event-stream format, decoded by the WHATWG rules (HTML Living Standard, "Server-sent
events", "Interpreting an event stream"): pure, fed text as it arrives.

Our own because the public API of httpx-sse (`aiter_sse`) drops comment lines, and a comment is
how Saba's server says it is alive: the watchdog needs to see them. The rules:
- lines end with CRLF, LF or CR (only those: not the other Unicode line breaks `str.splitlines`
  knows, which may occur unescaped inside a JSON string); a leading byte-order mark is dropped;
- a line starting with `:` is a comment;
- `field: value` (one leading space of the value is stripped; a line without a colon is a field
  with an empty value): `data` appends the value and a LF to the data buffer, `event` sets the
  event type, `id` sets the last event id unless the value contains NUL, `retry` sets the
  reconnection time when the value is ASCII digits only; other fields are ignored;
- a blank line dispatches the event, unless no `data` line came (then the event type is reset
  and nothing is dispatched); the last event id persists from one event to the next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile("\r\n|\r|\n")


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    id: str = ""  # the last event id at dispatch: set by this event or an earlier one
    retry: int | None = None  # milliseconds, if a `retry` field came since the last event


@dataclass(frozen=True)
class Comment:
    text: str  # after the colon, as sent


class EventStreamDecoder:
    """Feed it text in chunks of any size; it returns the comments and events they complete."""

    def __init__(self) -> None:
        self._partial = ""  # the start of a line whose end has not arrived yet
        self._skip_lf = False  # the last chunk ended with CR: a LF next completes that CRLF
        self._started = False
        self._data: list[str] = []
        self._seen_data = False
        self._event = ""
        self._id = ""
        self._retry: int | None = None

    def feed(self, text: str) -> list[Event | Comment]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        *lines, self._partial = _LINE_END.split(self._partial + text)
        if lines and not self._partial and text.endswith("\r"):
            self._skip_lf = True
        out: list[Event | Comment] = []
        for line in lines:
            item = self.line(line)
            if item is not None:
                out.append(item)
        return out

    def line(self, line: str) -> Event | Comment | None:
        """One complete line, without its line ending."""
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return Comment(line[1:])
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._seen_data = True
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        seen, self._seen_data = self._seen_data, False
        data, self._data = self._data, []
        event, self._event = self._event, ""
        if not seen:
            return None
        retry, self._retry = self._retry, None
        return Event("\n".join(data), event or "message", self._id, retry)
