"""Connections to vendors: one WebSocket or SSE session at a time, as dumb as possible.

`recv_many()` returns the frames received and not returned yet (a WebSocket hands over every one
it holds; SSE, one at a time). What is not a frame (SSE comments, `data: KEEPALIVE`) is not
returned; an SSE session tells its `heard` callback of every chunk of bytes instead, since any
byte proves the connection alive. Every failure becomes `Disconnected` (with a reason safe to
store) or, during the opening handshake, `Refused` (with the HTTP status, Retry-After and the
body). A failure to connect names the address as scheme://host:port: never the path's query or
credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import ssl
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import DATA_OPCODES, Opcode
from websockets.frames import Frame as WireFrame
from websockets.protocol import State
from websockets.streams import StreamReader

from warehouse.collect.sse import EventStream

_MAX_ERROR_BODY = 64 * 1024
_tuple_new = tuple.__new__


class Frame(NamedTuple):  # a tuple: one is made for every frame received, and a frozen dataclass costs ~3× as much
    data: bytes
    event_id: str | None = None  # SSE: the last event id at this event
    event_type: str | None = None  # SSE: the `event:` type, when not the default ("message")
    size: int | None = None  # SSE: set when the event passed max_frame_bytes; `data` is then only its start


class Disconnected(Exception):
    """The connection ended; `args[0]` says how (never contains a secret)."""


class Refused(Exception):
    """The server refused the connection with an HTTP status."""

    def __init__(self, status: int, retry_after: float | None, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.retry_after, self.body = status, retry_after, body


MAX_RETRY_AFTER_S = 3600.0  # a server naming a longer pause (or "inf") is asked again after an hour


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number of seconds or an HTTP date), at most an hour."""
    if not value:
        return None
    seconds = None
    with contextlib.suppress(ValueError):
        seconds = float(value)
    if seconds is None:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    if seconds is None or seconds != seconds:  # unparsable, or NaN
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates are always verified; `ca_file` (PEM) adds a private CA to the system's."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


def address(url: str) -> str:
    """scheme://host:port of `url`: what to name in an error (the query and userinfo may hold secrets)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "?", parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a malformed port
        return "an invalid URL"
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port or '?'}"


def _connect_failed(exc: BaseException, url: str) -> Disconnected:
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        detail = getattr(exc, "verify_message", None) or str(exc)
        return Disconnected(f"TLS certificate not trusted ({detail}) at {address(url)}; if the server uses a"
                            " private CA, set ca_file = \"/path/to/ca.pem\" in this feed's config")
    return Disconnected(f"connect to {address(url)} failed: {type(exc).__name__}: {exc}")


# Reading from the vendor pauses while this much waits for the runner (it resumes once the runner
# took it): memory stays bounded whatever the runner's pace, and the vendor's sends slow down instead.
BUFFER_HIGH_BYTES = 1024 * 1024
BUFFER_HIGH_MESSAGES = 1024
# A frame's first byte: FIN with the text or binary opcode, no RSV bit; FIN with ping, pong or close.
_DATA = frozenset(0x80 | op.value for op in (Opcode.TEXT, Opcode.BINARY))
_CONTROL = frozenset(0x80 | op.value for op in (Opcode.PING, Opcode.PONG, Opcode.CLOSE))
_U16, _U64 = struct.Struct("!H").unpack_from, struct.Struct("!Q").unpack_from
_AT_EOF = StreamReader.at_eof.__code__  # where the library's parser waits between two frames


class BatchingConnection(ClientConnection):
    """websockets' asyncio client connection (handshake, TLS, compression, ping/pong, the closing
    handshake, max_size: all its own), with the data messages delivered differently: kept in a
    list as its Sans-I/O protocol parses them, and handed over all at once by `recv_many()`. Its
    own `recv()` makes a future, an assembler entry and a flow-control check per message, which at
    tens of thousands of frames a second is a tenth of the collector's work (docs/performance.md).
    `recv()` is not used on this connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[Frame] = []  # complete data messages not yet taken, in order
        self._buffered = 0  # their bytes
        self._fragments: list[bytes] | None = None  # the parts of a fragmented message so far
        self._waiter: asyncio.Future[None] | None = None  # recv_many() waiting for a message
        self._paused = False  # reading paused until recv_many() takes what is buffered
        self._direct = False  # data frames parsed here (`_frames`), not by the library's parser
        self._partial = bytearray()  # the start of a frame not complete yet (direct parsing)
        self._partial_needs = 0  # its bytes in all, once its header is in (0: not known yet)
        self._parser: Any = None  # the library's parser when it was last seen between frames

    # -- data frames parsed here ---------------------------------------------------------------------
    # websockets' Sans-I/O parser is a chain of generators (the header, its length, the payload) per frame:
    # ~2.4 µs of a two-price OddsPapi frame's ~24 (docs/performance.md, "Collector CPU after the second
    # connection"). While the connection is open with no extension (no compression) and the library's
    # parser waits between two frames with nothing buffered, complete unfragmented text and binary frames
    # are taken here; a control frame (ping, pong, close) goes whole to the library, and anything else
    # (a fragment, RSV bits, a mask, a reserved opcode, a frame beyond max_size) goes to it with every
    # byte after it, until its parser waits between frames again: it checks, answers and fails as ever.

    def data_received(self, data: bytes) -> None:
        if self._direct and self.protocol.parser is not self._parser:  # failed or closed meanwhile (not by a frame)
            self._direct, data, self._partial, self._partial_needs = False, bytes(self._partial) + data, bytearray(), 0
        if not self._direct:
            super().data_received(data)
            self._direct = self._between_frames()
            return
        start = 0
        if self._partial:  # a frame begun in an earlier piece
            partial, needs = self._partial, self._partial_needs
            if not needs:  # its header was cut (rare): parse from its start again
                data, self._partial = bytes(partial) + data, bytearray()
            elif len(partial) + len(data) < needs:  # a long frame still arriving: nothing to parse yet
                partial += data
                return
            else:  # the frame completed by the start of `data`, then the rest of `data` from where it ends
                start = needs - len(partial)
                partial += memoryview(data)[:start]
                self._partial, self._partial_needs = bytearray(), 0
                rest = self._frames(bytes(partial), 0)
                if rest is not None:
                    data, start = rest + data[start:], 0
                    self._direct = False
        self._partial_needs = 0
        rest = self._frames(data, start) if self._direct else data
        if rest is not None:  # not a plain data frame: the library takes it, and all after it
            self._direct = False
            super().data_received(rest)
            self._direct = self._between_frames()

    def _between_frames(self) -> bool:
        """The library's parser waits for the first byte of a frame, nothing buffered, no extension, no
        fragmented message under way. False if the library is not what this expects (where its parser
        waits is read from its generators): then every frame goes its way, as before."""
        protocol = self.protocol
        try:  # websockets' own attributes (as of 17.x), the size limits `_frames` reads among them
            protocol.max_message_size, protocol.max_fragment_size  # noqa: B018
            if (protocol.state is not State.OPEN or protocol.extensions or protocol.current_size is not None
                    or protocol.reader.buffer):
                return False
        except AttributeError:
            return False
        waiting = protocol.parser  # the generator the parser is suspended in, innermost
        for _ in range(8):
            inner = getattr(waiting, "gi_yieldfrom", None)
            if inner is None:
                break
            waiting = inner
        self._parser = protocol.parser
        return getattr(waiting, "gi_code", None) is _AT_EOF

    def _frames(self, data: bytes, start: int) -> bytes | None:
        """Take the complete data frames of `data` from `start` on, keep an incomplete one for later; the
        bytes from the first frame that is not a plain data frame on, for the library (None: none)."""
        protocol = self.protocol
        limits = [n for n in (protocol.max_message_size, protocol.max_fragment_size) if n is not None]
        limit = min(limits) if limits else None
        messages, end, size = self.messages, len(data), 0
        taken = len(messages)
        rest: bytes | None = None
        while end - start >= 2:
            head, length = data[start], data[start + 1]  # length < 128: no mask (a server's frames have none)
            if length < 126:
                payload = start + 2
            elif length == 126:
                payload = start + 4
                length = _U16(data, start + 2)[0] if end >= payload else -1
            elif length == 127:
                payload = start + 10
                length = _U64(data, start + 2)[0] if end >= payload else -1
            else:  # masked
                rest = data[start:]
                break
            if length < 0:  # the length itself is not in yet
                break
            stop = payload + length
            if head in _DATA:
                if limit is not None and length > limit:
                    rest = data[start:]
                    break
                if stop > end:
                    self._partial_needs = stop - start
                    break
                messages.append(_tuple_new(Frame, (data[payload:stop], None, None, None)))
                size += length
            elif head in _CONTROL and length < 126:  # a ping, pong or close, whole: the library's
                if stop > end:
                    self._partial_needs = stop - start
                    break
                super().data_received(data[start:stop])
                if not self._between_frames():  # closing
                    rest = data[stop:]
                    start = end
                    break
            else:
                rest = data[start:]
                break
            start = stop
        if rest is None and start < end:
            self._partial = bytearray(data[start:])
        if len(messages) > taken:  # empty frames too: each is a message
            self._took(size)
        return rest

    def _took(self, size: int) -> None:
        """Data messages of `size` bytes were added: wake recv_many(), pause reading beyond the bounds."""
        self._buffered += size
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._paused and (self._buffered >= BUFFER_HIGH_BYTES or len(self.messages) >= BUFFER_HIGH_MESSAGES):
            self._paused = True
            self.transport.pause_reading()

    def process_event(self, event: Any) -> None:
        # The handshake's response, pings, pongs and the close frame go the library's way.
        if self.response is None or not isinstance(event, WireFrame) or event.opcode not in DATA_OPCODES:
            super().process_event(event)
            return
        data = bytes(event.data)
        if event.opcode is Opcode.CONT or not event.fin:  # fragmented (the protocol checks the order and size)
            fragments = self._fragments = [] if event.opcode is not Opcode.CONT else self._fragments or []
            fragments.append(data)
            if not event.fin:
                return
            data, self._fragments = b"".join(fragments), None
        self.messages.append(_tuple_new(Frame, (data, None, None, None)))  # Frame(data), without its keywords
        self._took(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv_many(self) -> list[Frame]:
        """Every data message received and not taken yet (at least one: waits for it), as bytes;
        ConnectionClosed once the connection has ended and nothing is left."""
        while not self.messages:
            if self.connection_lost_waiter.done():
                raise self.close_exc
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        messages, self.messages, self._buffered = self.messages, [], 0
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        return messages


class WebSocketSession:
    def __init__(self, *, ping_interval: float, connect_timeout: float, max_frame_bytes: int,
                 tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls or tls_context()
        self._options: dict[str, Any] = {
            "ping_interval": ping_interval, "ping_timeout": ping_interval, "open_timeout": connect_timeout,
            "close_timeout": 2,
            # Frames over max_frame_bytes are quarantined by the runner with their size; only a
            # frame far beyond it closes the connection, so memory stays bounded.
            "max_size": max(4 * max_frame_bytes, 64 * 1024 * 1024),
            "compression": "deflate",
            "create_connection": BatchingConnection,
        }
        self._ws: BatchingConnection | None = None

    async def open(self, url: str, headers: dict[str, str]) -> None:
        try:
            tls = self._tls if url.startswith("wss:") else None
            ws = await ws_connect(url, additional_headers=headers, ssl=tls, **self._options)
        except websockets.InvalidStatus as exc:
            response = exc.response
            body = (response.body or b"")[:_MAX_ERROR_BODY].decode("utf-8", "replace")
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise Refused(response.status_code, retry_after, body) from None
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise _connect_failed(exc, url) from None
        assert isinstance(ws, BatchingConnection)
        self._ws = ws

    async def recv_many(self) -> list[Frame]:
        """Every frame received and not returned yet (at least one: waits for one), in order."""
        assert self._ws is not None
        try:
            # bytes as sent; invalid UTF-8 is then quarantined instead of ending the connection
            return await self._ws.recv_many()
        except websockets.ConnectionClosed as exc:
            raise Disconnected(_close_reason(exc)) from None
        except OSError as exc:
            raise Disconnected(f"connection lost: {type(exc).__name__}: {exc}") from None

    async def send(self, text: str) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(text)
        except websockets.ConnectionClosed as exc:
            raise Disconnected(_close_reason(exc)) from None

    def unread(self) -> bool:
        """Bytes have arrived that recv_many() has not returned yet (a clean stop reads them first)."""
        ws = self._ws
        return ws is not None and (bool(ws.messages) or _readable(ws.transport.get_extra_info("socket")))

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake (the claim on its feed is gone)."""
        if self._ws is not None:
            self._ws.transport.abort()


def _readable(sock: Any) -> bool:
    """Whether the socket has bytes (or its end) waiting to be read, without reading them."""
    if sock is None or sock.fileno() < 0:
        return False
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))


def _close_reason(exc: websockets.ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"server closed: code {exc.rcvd.code} {exc.rcvd.reason}".rstrip()
    if exc.sent is not None:
        return f"closed by us: code {exc.sent.code} {exc.sent.reason}".rstrip()
    return "connection lost without a close frame"


class SseSession:
    """One GET of an event stream, read through `EventStream` (httpx-sse, with a byte framing below it)."""

    def __init__(self, *, connect_timeout: float, max_event_bytes: int, last_event_id: str | None = None,
                 heard: Callable[[], None] | None = None, tls: ssl.SSLContext | None = None) -> None:
        # read=None: silence is the watchdog's call, which knows the feed's keep-alive interval and
        # hears every byte (`heard`), a comment or part of a long event alike
        self._client = httpx.AsyncClient(verify=tls or tls_context(),
            timeout=httpx.Timeout(connect=connect_timeout, read=None, write=connect_timeout, pool=connect_timeout))
        self._response: httpx.Response | None = None
        self._max_event_bytes, self._heard = max_event_bytes, heard
        self._last_event_id = last_event_id
        self._stream: EventStream | None = None

    @property
    def last_event_id(self) -> str | None:
        """The id a reconnect sends as Last-Event-ID (None: send none)."""
        return self._stream.last_event_id if self._stream is not None else self._last_event_id

    @property
    def retry_s(self) -> float | None:
        """The reconnection time the server set with `retry:` (at most an hour), if it set one."""
        retry_ms = self._stream.retry_ms if self._stream is not None else None
        return None if retry_ms is None else min(MAX_RETRY_AFTER_S, retry_ms / 1000)

    async def open(self, url: str, headers: dict[str, str]) -> None:
        request = self._client.build_request("GET", url, headers=headers)
        try:
            self._response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _connect_failed(exc, url) from None
        response = self._response
        if response.status_code != 200:
            body = b""
            with contextlib.suppress(httpx.HTTPError):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= _MAX_ERROR_BODY:
                        break
            await response.aclose()
            raise Refused(response.status_code, retry_after_seconds(response.headers.get("Retry-After")),
                          body[:_MAX_ERROR_BODY].decode("utf-8", "replace"))
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            await response.aclose()
            raise Disconnected(f"server answered {content_type or 'no content type'}, not text/event-stream")
        self._stream = EventStream(response.aiter_bytes(),  # decompressed (gzip, deflate, br)
                                   max_data_bytes=self._max_event_bytes, last_event_id=self._last_event_id,
                                   heard=self._heard)

    async def recv(self) -> Frame:
        assert self._stream is not None
        while True:
            try:
                event = await self._stream.next()
            except StopAsyncIteration:
                raise Disconnected("server ended the stream") from None
            except (httpx.HTTPError, httpx.StreamError) as exc:
                raise Disconnected(f"connection lost: {type(exc).__name__}: {exc}") from None
            if event.cut_size is None and event.data.strip() == "KEEPALIVE":
                continue  # Saba's keep-alive, if sent as data: not a frame
            return Frame(event.data.encode(), event.id, None if event.type == "message" else event.type,
                         event.cut_size)

    async def recv_many(self) -> list[Frame]:
        """The next frame, as a batch of one (the receive loop takes batches from every session)."""
        return [await self.recv()]

    async def send(self, text: str) -> None:
        raise Disconnected("SSE is one-way: nothing can be sent")

    def abort(self) -> None:
        """Shut the connection's socket down now (the claim on its feed is gone); close() tidies up."""
        stream = self._response.extensions.get("network_stream") if self._response is not None else None
        raw = stream.get_extra_info("socket") if stream is not None else None
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)

    def unread(self) -> bool:
        """Bytes have arrived that recv() has not returned yet (a clean stop reads them first)."""
        stream = self._response.extensions.get("network_stream") if self._response is not None else None
        return bool(stream is not None and stream.get_extra_info("is_readable"))

    async def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.aclose()
        if self._response is not None:
            with contextlib.suppress(Exception):
                await self._response.aclose()
        await self._client.aclose()
