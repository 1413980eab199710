"""The text/event-stream of an SSE feed: `httpx-sse` interprets it, a byte framing below it sees the bytes.

`httpx-sse` (public API: `EventSource(response).aiter_sse()`) splits lines and applies the WHATWG
field rules ("Interpreting an event stream"): `data` lines joined by LF, one space after the colon
stripped, `event` for one event, `id` persisting (ignored when it holds NUL), comments skipped.
What its public iterator cannot tell, `Blocks` works out from the bytes before handing them on,
in time linear in their number:
- liveness: every chunk is a sign of life, a comment or part of a long event alike;
- where each block (the lines up to a blank line) ends, and whether it has a `data` line: only
  such a block is an event, while httpx-sse yields one for any block once an id was set;
- size: data past `limit` bytes is not handed on; the block is still dispatched (quarantined
  by the runner with its full size) and the stream goes on;
- what httpx-sse does not do by the standard: a leading byte-order mark is dropped, a `retry`
  value other than ASCII digits is dropped (httpx-sse would read `+5` or ` 5` as 5), and every
  line end (CR, LF, CRLF) becomes LF, so a block is dispatched as soon as its blank line arrives.
A line that is not data and longer than `limit` is dropped, so memory stays bounded; a comment
is dropped whatever its size (httpx-sse would skip it).

`EventStream` joins the two: it hands httpx-sse the framed bytes of each chunk as one piece (one
pass through httpx's response layers a chunk, not a block) and keeps the blocks the chunk ended, in
order. Each block reaches httpx-sse as exactly one event: httpx-sse yields one at a blank line unless
its buffers are all empty, and a block with no data line gets a `retry:-1` line (a value the
standard ignores and the framing drops from the stream, so it can only be this one), so every
event httpx-sse yields is the next kept block's. Each event's `id` is then the last event id at
that block, even at a block that left it empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

_BOM = b"\xef\xbb\xbf"
_tuple_new = tuple.__new__
_RETRY_DIGITS = 10  # a longer reconnection time (over 115 days in ms) is kept out, as a non-digit one is
_NO_RETRY = b"retry:-1\n"  # makes httpx-sse yield an event for a block that has no data line (see above)


class Block(NamedTuple):  # one is made for every block: a NamedTuple costs a third of a frozen dataclass
    """One block as the byte framing saw it."""

    data: bool  # it has a data line: the standard dispatches it as an event
    data_bytes: int  # the size of its data: the values of its data lines, joined by LF
    cut: bool  # its data passed the limit: only the start of it was handed on


class Blocks:
    """Feed it the stream's bytes as they arrive; it returns the bytes to hand to httpx-sse and the
    blocks they end, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._start: bytes | None = b""  # the first bytes, until they show whether a BOM leads
        self._cr = False  # the last chunk ended with CR: a LF first in the next one is part of that line end
        self._out: list[bytes] = []
        # the current line
        self._head = b""  # its first bytes, up to 6: tells a data line, and the space its value may start with
        self._length = 0
        self._is_data: bool | None = None  # undecided until 5 bytes (`data:`) or the line's end (`data`)
        self._held: list[bytes] | None = []  # a line that is not data, held until it ends (None: too long, dropped)
        self._passed = False  # some of it was handed on
        # the current block
        self._data = False  # a data line ended
        self._data_bytes = 0  # the data of the lines that ended
        self._cut = False
        self._retry = False  # a `retry` line was handed on

    def feed(self, chunk: bytes) -> tuple[bytes, list[Block]]:
        if self._start is not None:
            chunk = self._start + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._start = chunk
                return b"", []
            self._start = None
            chunk = chunk.removeprefix(_BOM)
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        blocks: list[Block] = []
        lines = _lines(chunk)
        rest = lines.pop()  # what follows the last line end: the start of a line
        out, limit = self._out, self.limit
        remaining = iter(lines)
        if self._length and lines:  # the first line began in an earlier chunk: the general path
            self._part(next(remaining))
            block = self._line_end()
            if block is not None:
                blocks.append(block)
        # The current block's state in locals while the common lines are read whole, in a few steps
        # (what the general path below does with them, step by step): a blank line, a data line within
        # the limit, an id, a comment.
        data, data_bytes, cut, retry = self._data, self._data_bytes, self._cut, self._retry
        for line in remaining:
            if not line:
                blocks.append(_tuple_new(Block, (data, data_bytes, cut)))
                if not data and not retry:
                    out.append(_NO_RETRY)
                out.append(b"\n")
                data, data_bytes, cut, retry = False, 0, False, False
                continue
            elif line.startswith(b"data:"):
                size = data_bytes + data + len(line) - 5 - (line[5:6] == b" ")
                if not cut and size <= limit:
                    out += (line, b"\n")
                    data_bytes, data = size, True
                    continue
            elif line.startswith(b"id:") and len(line) <= limit:
                out += (line, b"\n")
                continue
            elif line.startswith(b":"):
                continue  # a comment: httpx-sse skips it
            self._data, self._data_bytes, self._cut, self._retry = data, data_bytes, cut, retry
            self._part(line)
            block = self._line_end()
            if block is not None:
                blocks.append(block)
            data, data_bytes, cut, retry = self._data, self._data_bytes, self._cut, self._retry
        self._data, self._data_bytes, self._cut, self._retry = data, data_bytes, cut, retry
        self._part(rest)
        piece = b"".join(out)
        out.clear()
        return piece, blocks

    def _part(self, part: bytes) -> None:
        """More of the current line (no line end in it)."""
        if not part:
            return
        if len(self._head) < 6:
            self._head += part[: 6 - len(self._head)]
        self._length += len(part)
        if self._is_data is None:
            assert self._held is not None  # a line is dropped only once it is known not to be data
            self._held.append(part)
            if len(self._head) >= 5:
                self._decide(self._head.startswith(b"data:"))
        elif self._is_data:
            self._stream(part)
        else:
            self._hold(part)

    def _decide(self, is_data: bool) -> None:
        self._is_data = is_data
        held, self._held = b"".join(self._held or ()), []
        if is_data:
            self._stream(held)
        else:
            self._hold(held)

    def _hold(self, part: bytes) -> None:
        if self._held is None:
            return
        if self._length > self.limit:
            self._held = None
        else:
            self._held.append(part)

    def _data_now(self) -> int:
        """The block's data size so far, with the data line being read."""
        value = max(0, self._length - 5 - (self._head[5:6] == b" "))
        return self._data_bytes + self._data + value

    def _stream(self, part: bytes) -> None:
        if self._cut:
            return
        over = self._data_now() - self.limit
        if over > 0:
            part = part[: max(0, len(part) - over)]
            self._cut = True
        if part:
            self._out.append(part)
            self._passed = True
        if self._cut and self._passed:
            self._out.append(b"\n")  # end the line here: the rest of the block's data is not handed on

    def _line_end(self) -> Block | None:
        if self._is_data is None:
            self._decide(self._head == b"data")
        block = None
        if not self._length:  # a blank line: the block ends
            block = Block(self._data, self._data_bytes, self._cut)
            if not self._data and not self._retry:
                self._out.append(_NO_RETRY)
            self._out.append(b"\n")
            self._data, self._data_bytes, self._cut, self._retry = False, 0, False, False
        elif self._is_data:
            if not self._cut:
                self._out.append(b"\n")
            self._data_bytes, self._data = self._data_now(), True
        elif self._held is not None:
            line = b"".join(self._held)
            field = _field(line)
            if field is not None:
                self._out += (line, b"\n")
                self._retry = self._retry or field == b"retry"
        self._head, self._length, self._is_data, self._held, self._passed = b"", 0, None, [], False
        return block


def _lines(chunk: bytes) -> list[bytes]:
    """The chunk split at its line ends (CRLF, LF or CR), without them; the last item is what follows the
    last one. Splitting at LF and taking a CR off the end of each line costs a third of replacing every
    CRLF and CR with LF first (what a stream ending its lines with CRLF, as Saba's does, would take)."""
    lines = chunk.split(b"\n")
    crs = chunk.count(b"\r")
    if not crs:
        return lines
    ends = len(chunk) - (len(lines) - 1)  # the bytes of the lines with their CRs (the LFs taken off)
    if chunk.endswith(b"\r"):
        lines.append(b"")  # the last line ended with its CR
    lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
    if crs != ends - sum(map(len, lines)):  # not every CR was a line's last byte: one ends a line alone (rare)
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return lines


def _field(line: bytes) -> bytes | None:
    """The name of a line that is not data, if httpx-sse is to see it: not a comment (it skips those),
    nor a `retry` whose value is not ASCII digits (the standard ignores it), nor one too long for
    `int()` (httpx-sse would drop it silently and yield no event for its block: every later event would
    then be matched with the block before it)."""
    name, _, value = line.partition(b":")
    if not name:
        return None
    if name == b"retry":
        digits = value.removeprefix(b" ")
        if not digits.isdigit() or len(digits) > _RETRY_DIGITS:
            return None
    return name


class Event(NamedTuple):  # one is made for every event: a NamedTuple costs a third of a frozen dataclass
    """A block with data: what the standard dispatches."""

    data: str
    type: str = "message"
    id: str | None = None  # the last event id at its dispatch (set by this block or an earlier one)
    cut_size: int | None = None  # set when its data passed the limit: the full size, and `data` is only its start


class EventStream:
    """The events of one response body. `last_event_id` is what a reconnect sends (None: no header);
    `retry_ms` the reconnection time the server set (None: it set none)."""

    def __init__(self, body: AsyncIterator[bytes], *, max_data_bytes: int, last_event_id: str | None = None,
                 heard: Callable[[], None] | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._body = body
        self._heard = heard
        self._blocks = Blocks(max_data_bytes)
        self._ended: deque[Block] = deque()  # the blocks handed to httpx-sse whose events it has not yielded yet
        self._reading = False
        # httpx-sse reads the response's text: UTF-8 whatever the server's headers said (the standard's rule)
        framed = httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"},
                                content=self._pieces())
        self._events = EventSource(framed).aiter_sse()

    async def _pieces(self) -> AsyncIterator[bytes]:
        if self.last_event_id:
            # A reconnect goes on from the id it sent, as a browser's EventSource does: an event
            # without an id field carries it, a block with `id` empty clears it.
            yield b"id: " + self.last_event_id.encode() + b"\n"
        async for chunk in self._body:
            if self._heard is not None:
                self._heard()
            piece, blocks = self._blocks.feed(chunk)
            self._ended += blocks
            if piece:
                yield piece

    async def next(self) -> Event:
        """The next event; StopAsyncIteration at the end of the body."""
        while True:
            self._reading = True
            try:
                sse: ServerSentEvent = await anext(self._events)
            finally:
                self._reading = False
            if not self._ended:  # cannot be while each block makes one event (see above)
                raise SSEError("httpx-sse yielded an event where no block ended")  # the session reconnects
            block = self._ended.popleft()
            self.last_event_id = sse.id or None
            if sse.retry is not None and sse.retry >= 0:
                self.retry_ms = sse.retry
            if block.data:
                return Event(sse.data, sse.event, self.last_event_id, block.data_bytes if block.cut else None)

    async def aclose(self) -> None:
        if not self._reading:  # a read in progress ends when the connection is closed under it
            await self._events.aclose()
