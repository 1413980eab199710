"""BatchingConnection's direct parsing of data frames: an empty frame, every split point, a connection
the client failed, ping and deflate beside it (from a review, 2026-12-06)."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from tests.test_transports import wire_frame
from warehouse.collect.transports import Disconnected, WebSocketSession


async def opened(server: Any) -> tuple[WebSocketSession, Any]:
    """A session on the test server, and its BatchingConnection."""
    port = server.sockets[0].getsockname()[1]
    session = WebSocketSession(ping_interval=20, connect_timeout=5, max_frame_bytes=1 << 20)
    await session.open(f"ws://127.0.0.1:{port}/", {})
    assert session._ws is not None
    return session, session._ws


async def until_closed(session: WebSocketSession, ws: Any) -> tuple[list[bytes], bool]:
    """Every frame until the connection ends, and whether any was parsed directly."""
    got: list[bytes] = []
    direct = False
    try:
        while True:
            got += [f.data for f in await session.recv_many()]
            direct = direct or ws._direct
    except Disconnected:
        pass
    return got, direct


def test_an_empty_data_frame_on_its_own_wakes_recv_many() -> None:
    """An empty text frame (some vendors' heartbeat) is a message: recv_many() returns it. Parsed
    directly it is appended but `_took` is skipped (`if size:`), so recv_many() sleeps until some
    later non-empty frame arrives (for ever if none does)."""
    answered = asyncio.Event()

    async def vendor(ws: ServerConnection) -> None:
        ws.transport.write(wire_frame(0x1, b"before"))
        await asyncio.wait_for(await ws.ping(), 10)  # the client took it: it parses directly now
        ws.transport.write(wire_frame(0x1, b""))
        await asyncio.wait_for(await ws.ping(), 10)  # the client has read the empty frame too
        answered.set()
        await ws.wait_closed()

    async def main() -> tuple[list[bytes], bool, list[bytes] | None]:
        async with serve(vendor, "127.0.0.1", 0, compression=None) as server:
            session, ws = await opened(server)
            first = [f.data for f in await session.recv_many()]
            task = asyncio.ensure_future(session.recv_many())
            await answered.wait()
            done, _ = await asyncio.wait({task}, timeout=10)  # a bound, not a timing: old code is done at once
            buffered = [f.data for f in ws.messages]
            second = [f.data for f in task.result()] if done else None
            task.cancel()
            await session.close()
            return first, buffered == [b""], second

    first, buffered, second = asyncio.run(asyncio.wait_for(main(), 60))
    assert first == [b"before"]
    assert second == [b""], f"recv_many() still waiting although the empty frame is buffered: {buffered}"


STREAM_FRAMES = [
    wire_frame(0x1, b"a"), wire_frame(0x2, b""), wire_frame(0x1, b"b" * 125), wire_frame(0x9, b"p1"),
    wire_frame(0x1, b"c" * 126), wire_frame(0xA, b""), wire_frame(0x2, b"d" * 300),
    wire_frame(0x1, (127).to_bytes(1, "big") * 3),
]
# A 64-bit length (65,536 bytes) at the end, so a split can land in its 8-byte extended length.
STREAM = b"".join(STREAM_FRAMES) + wire_frame(0x1, b"e" * 65536)
EXPECTED = [b"a", b"", b"b" * 125, b"c" * 126, b"d" * 300, b"\x7f" * 3, b"e" * 65536]


def test_direct_parsing_reassembles_a_stream_split_at_every_byte_boundary() -> None:
    """The same connection, in direct mode, is fed the stream cut in two at every offset (the
    header, the 16- and 64-bit extended lengths, the payloads, the ping between them), byte by
    byte, and in random pieces, as the transport would hand it over; each time every message comes
    out whole and in order, and the connection is back between frames with nothing kept."""

    async def vendor(ws: ServerConnection) -> None:
        ws.transport.write(wire_frame(0x1, b"hello"))
        await ws.wait_closed()

    async def main() -> list[str]:
        problems: list[str] = []
        async with serve(vendor, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            session = WebSocketSession(ping_interval=None, connect_timeout=5, max_frame_bytes=1 << 20)  # type: ignore[arg-type]
            await session.open(f"ws://127.0.0.1:{port}/", {})
            ws = session._ws
            assert ws is not None
            assert [f.data for f in await session.recv_many()] == [b"hello"]
            assert ws._direct
            head = len(STREAM) - 65536 - 10
            cuts = [[i] for i in range(1, head + 20)] + [[i] for i in range(len(STREAM) - 5, len(STREAM))]
            cuts.append([*list(range(1, len(STREAM) - 65536)), len(STREAM) - 1])  # byte by byte
            rng = random.Random(5)
            cuts += [sorted(rng.sample(range(1, len(STREAM)), 12)) for _ in range(300)]
            for points in cuts:
                edges = [0, *points, len(STREAM)]
                for a, b in itertools.pairwise(edges):
                    ws.data_received(STREAM[a:b])
                got = [f.data for f in ws.messages]
                if got:
                    got = [f.data for f in await ws.recv_many()]
                if got != EXPECTED or not ws._direct or ws._partial:
                    problems.append(f"cut at {points[:5]}: {[len(g) for g in got]} direct={ws._direct} "
                                    f"partial={len(ws._partial)}")
                    break
            await session.close()
        return problems

    assert asyncio.run(asyncio.wait_for(main(), 300)) == []


def test_no_frame_is_taken_after_the_client_failed_the_connection() -> None:
    """Once the client fails the connection (what websockets' keepalive does when a pong is late:
    protocol.fail(1011, "keepalive ping timeout")), websockets discards what arrives (RFC 6455 7.1.7:
    MUST NOT continue to process data). `_direct` is only re-checked after the library parsed something,
    so frames arriving next are still parsed and handed over."""
    failed, sent = asyncio.Event(), asyncio.Event()

    async def vendor(ws: ServerConnection) -> None:
        ws.transport.write(wire_frame(0x1, b"before"))
        await asyncio.wait_for(await ws.ping(), 10)  # the client parses directly now
        await failed.wait()
        ws.transport.write(wire_frame(0x1, b"after the client failed"))
        sent.set()
        await ws.wait_closed()

    async def main() -> list[bytes]:
        async with serve(vendor, "127.0.0.1", 0, compression=None) as server:
            session, ws = await opened(server)
            received = [f.data for f in await session.recv_many()]
            assert getattr(ws, "_direct", True)
            ws.protocol.fail(1011, "keepalive ping timeout")  # as websockets' keepalive() does
            ws.send_data()
            failed.set()
            await sent.wait()
            for _ in range(50):  # let the frame arrive (bounded; no timing asserted)
                await asyncio.sleep(0.02)
            received += [f.data for f in ws.messages]
            ws.transport.abort()
        return received

    assert asyncio.run(asyncio.wait_for(main(), 60)) == [b"before"]


def test_a_ping_among_directly_parsed_frames_is_answered_and_deflate_goes_the_library_way() -> None:
    pong: list[float] = []

    async def plain(ws: ServerConnection) -> None:
        ws.transport.write(wire_frame(0x1, b"x"))
        await asyncio.wait_for(await ws.ping(), 10)  # direct from here on
        burst = b"".join(wire_frame(0x1, b"%d" % i) for i in range(100))
        ws.transport.write(burst)
        waiter = await ws.ping(b"mid")  # written at once: between the two bursts, most likely in one read
        ws.transport.write(burst)
        pong.append(await asyncio.wait_for(waiter, 10))
        await ws.close(1000, "done")

    async def compressed(ws: ServerConnection) -> None:
        for i in range(200):
            await ws.send(f"message {i} {'y' * 300}")
        await ws.close(1000, "done")

    async def run(handler, compression) -> tuple[list[bytes], bool]:  # type: ignore[no-untyped-def]
        async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
            session, ws = await opened(server)
            got, direct = await until_closed(session, ws)
            await session.close()
            return got, direct

    got, direct = asyncio.run(asyncio.wait_for(run(plain, None), 60))
    assert got == [b"x", *[b"%d" % i for i in range(100)] * 2] and direct and len(pong) == 1
    got, direct = asyncio.run(asyncio.wait_for(run(compressed, "deflate"), 60))
    assert got == [f"message {i} {'y' * 300}".encode() for i in range(200)] and not direct
