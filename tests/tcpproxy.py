"""A TCP proxy a test controls, in front of a PostgreSQL that listens on a Unix socket: what a collector
on another host sees of the database when the network between them fails.

`cut()` is the link going down: new connections are refused, and the ones open are either reset
(`blackhole=False`: the client sees the error at once) or go silent (`blackhole=True`: nothing more
arrives either way, as when packets are dropped; the server's side is closed, as its keepalives
would find, so that no session of the cut-off client holds a lock meanwhile). `restore()` is the link
coming back. Runs on an event loop of its own, in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from pathlib import Path
from typing import Any


class TcpProxy:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.port = 0
        self.down = False
        self.blackhole = False
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._silenced: list[asyncio.StreamWriter] = []  # clients of a blackholed link: kept open, never answered
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self, *, blackhole: bool = False) -> None:
        self._call(self._cut(blackhole))

    def restore(self) -> None:
        self.down = self.blackhole = False

    # -- on the proxy's loop ---------------------------------------------------------------------

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.down:
            _reset(client)
            return
        try:
            server_reader, server = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            _reset(client)
            return
        pair = (client, server)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(client_reader, server), self._pipe(server_reader, client))
        finally:
            self._pairs.discard(pair)
            if not (self.down and self.blackhole):
                for writer in pair:
                    writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if self.down:
                    return  # dropped: nothing crosses a cut link
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            if not self.down:
                writer.write_eof()

    async def _cut(self, blackhole: bool) -> None:
        self.down, self.blackhole = True, blackhole
        for client, server in list(self._pairs):
            server.transport.abort()  # the server's side ends (its keepalives would find the client gone)
            if blackhole:
                self._silenced.append(client)
            else:
                _reset(client)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client, server in list(self._pairs):
            client.transport.abort()
            server.transport.abort()
        for client in self._silenced:
            client.transport.abort()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset: the peer's next read or write fails at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
