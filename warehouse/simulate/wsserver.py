"""What every WebSocket simulator shares: listening on loopback, its URL, stopping."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from warehouse.simulate.vendors import Streams


class WebSocketSimulator:
    """Subclasses implement `_handle(ws)` and `_check(connection, request)` (the handshake, or a
    plain HTTP request: a REST twin answers those, see simulate/rest.py)."""

    _server: Server | None = None
    sent_count = 0  # frames sent, over every connection (what a collector should have stored)
    sent_by: dict[Any, int]  # frames sent per connection (its websockets id), in the order they opened
    tls: ssl.SSLContext | None = None  # set before start() to serve wss:// (the TLS tests)

    async def _listen(self, host: str, port: int, path: str, **options: Any) -> str:
        self.sent_by = {}
        self.streams = Streams()
        self._server = await serve(self._counted, host, port, process_request=self._check, ssl=self.tls, **options)
        bound = self._server.sockets[0].getsockname()
        return f"{'wss' if self.tls else 'ws'}://{bound[0]}:{bound[1]}{path}"

    async def _send(self, ws: ServerConnection, frame: str | bytes) -> None:
        await ws.send(frame)
        self.sent_count += 1
        self.sent_by[ws.id] = self.sent_by.get(ws.id, 0) + 1

    async def _send_burst(self, ws: ServerConnection, frames: list[bytes]) -> None:
        """Send frames that are due together in one socket write (text frames; bytes that are not
        UTF-8 as binary frames). The bytes on the wire are the same as one `send` each, but a
        system call per frame would make the simulator, not the collector, what a benchmark
        measures. Uses websockets' documented Sans-I/O layer (`ws.protocol`) within
        `send_context`, which checks the connection is open and applies flow control."""
        async with ws.send_context():
            for frame in frames:
                if frame.isascii() or _is_utf8(frame):
                    ws.protocol.send_text(frame)
                else:
                    ws.protocol.send_binary(frame)
            ws.transport.write(b"".join(ws.protocol.data_to_send()))
        self.sent_count += len(frames)
        self.sent_by[ws.id] = self.sent_by.get(ws.id, 0) + len(frames)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _counted(self, ws: ServerConnection) -> None:
        """A connection counts as open from its handshake until its socket is closed (not until the
        handler notices)."""
        self.streams.up()
        closed = asyncio.ensure_future(ws.wait_closed())
        closed.add_done_callback(lambda _: self.streams.down())
        await self._handle(ws)

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def _check(self, connection: ServerConnection,
               request: Request) -> Response | Awaitable[Response | None] | None:
        """The handshake: None accepts it; a Response (e.g. a REST twin's answer) is sent instead."""
        raise NotImplementedError


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
