"""Transports without a vendor: a failed connect names scheme://host:port and nothing secret;
Retry-After as seconds; a WebSocket's frames handed over in batches, in order, whole, with bounded
memory. (Frames through real connections: test_saba.py, test_oddspapi.py, test_tls.py.)"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from websockets.asyncio.server import ServerConnection, serve

from warehouse.collect import transports
from warehouse.collect.auth import LoginFailed, TokenSource
from warehouse.collect.transports import Disconnected, SseSession, WebSocketSession, address, retry_after_seconds
from warehouse.feeds.contract import Login

SECRET = "s3cret-key-0123456789"


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failure(open_connection) -> str:
    async def main() -> str:
        try:
            await open_connection()
        except (Disconnected, LoginFailed) as exc:
            return str(exc)
        raise AssertionError("the connection did not fail")

    return asyncio.run(asyncio.wait_for(main(), 30))


def assert_names_only_the_address(message: str, expected: str) -> None:
    assert expected in message, message
    for secret in (SECRET, "apiKey", "token=", "user", "pw@", "/v4/ws", "GetEvents", "/login"):
        assert secret not in message, message


def test_a_websocket_connect_failure_names_the_address(closed_port: int) -> None:
    session = WebSocketSession(ping_interval=20, connect_timeout=5, max_frame_bytes=1 << 20)
    message = failure(lambda: session.open(f"ws://user:pw@127.0.0.1:{closed_port}/v4/ws?apiKey={SECRET}", {}))
    assert message.startswith(f"connect to ws://127.0.0.1:{closed_port} failed: ")
    assert_names_only_the_address(message, f"ws://127.0.0.1:{closed_port}")


def test_an_sse_connect_failure_names_the_address(closed_port: int) -> None:
    """Saba's said only `ConnectError: All connection attempts failed` (issue 17 item 10)."""
    session = SseSession(connect_timeout=5, max_event_bytes=1 << 20)

    async def connect() -> None:
        try:
            await session.open(f"http://127.0.0.1:{closed_port}/sports/stream/v1/GetEvents?token={SECRET}",
                               {"Authorization": f"Bearer {SECRET}"})
        finally:
            await session.close()

    message = failure(connect)
    assert message.startswith(f"connect to http://127.0.0.1:{closed_port} failed: ConnectError")
    assert_names_only_the_address(message, f"http://127.0.0.1:{closed_port}")


def test_a_login_connect_failure_names_the_address_and_no_credential(closed_port: int) -> None:
    login = Login(url=f"http://127.0.0.1:{closed_port}/login", refresh_url=None,
                  body={"vendor_id": "vendor", "vendor_member_id": SECRET})
    tokens = TokenSource(login, timeout=5)

    async def connect() -> None:
        try:
            await tokens.token()
        finally:
            await tokens.aclose()

    message = failure(connect)
    assert message.startswith(f"login request to http://127.0.0.1:{closed_port} failed: ConnectError")
    assert_names_only_the_address(message, f"http://127.0.0.1:{closed_port}")


@pytest.mark.parametrize(("url", "expected"), [
    ("wss://api.oddspapi.io/v4/ws?apiKey=k", "wss://api.oddspapi.io:443"),
    ("ws://example.com/ws", "ws://example.com:80"),
    ("https://user:pass@api.wx7777.com/sports/stream/v1/GetEvents?token=t", "https://api.wx7777.com:443"),
    ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
    ("wss://[::1]:9443/ws", "wss://[::1]:9443"),
    ("http://host:notaport/x", "an invalid URL"),
    ("gopher://host/x", "gopher://host:?"),
])
def test_address_is_scheme_host_and_port_only(url: str, expected: str) -> None:
    assert address(url) == expected


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("120", 120.0),
    ("0", 0.0),
    ("1.5", 1.5),
    (" 30 ", 30.0),
    ("-5", 0.0),  # never a negative pause
    (None, None),
    ("", None),
    ("soon", None),
    ("Wed, 99 Foo 2026 00:00:00 GMT", None),
    ("inf", 3600.0),  # a server naming an endless pause is asked again after an hour
    ("nan", None),
    ("86400", 3600.0),
])
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_as_an_http_date() -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    later = retry_after_seconds(format_datetime(soon, usegmt=True))
    assert later is not None and 590 <= later <= 600  # the seconds from now until then
    assert retry_after_seconds(format_datetime(datetime(2999, 1, 1, tzinfo=UTC), usegmt=True)) == 3600.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no pause


# -- WebSocket frames in batches -------------------------------------------------------------------

MESSAGES = 4000  # 1 KiB each: four times what the session buffers before it stops reading


def message(n: int) -> bytes:
    return f'{{"n":{n},"pad":"{"x" * 1000}"}}'.encode()


async def vendor(ws: ServerConnection) -> None:
    """Many messages as fast as the socket takes them, a fragmented one, a binary one, then goodbye."""
    for n in range(MESSAGES):
        await ws.send(message(n).decode())
    await ws.send(["frag", "mented", " é"])  # text in three frames: one message
    await ws.send(b"\x00\xffbinary")
    await ws.close(1001, "going away")


def test_a_websocket_hands_over_every_buffered_frame_in_order_whole_and_bounded() -> None:
    """recv_many() returns what was received in order (a fragmented message whole), then the close
    reason; while nobody takes frames, reading stops near the bound instead of buffering them all."""

    async def main() -> tuple[list[bytes], str, int, int]:
        async with serve(vendor, "127.0.0.1", 0, compression=None, max_queue=None) as server:
            port = server.sockets[0].getsockname()[1]
            session = WebSocketSession(ping_interval=20, connect_timeout=5, max_frame_bytes=1 << 20)
            await session.open(f"ws://127.0.0.1:{port}/", {})
            ws = session._ws
            assert ws is not None
            await asyncio.sleep(0.5)  # nobody reads: the vendor sends until the session stops reading
            buffered_while_idle = ws._buffered
            received: list[bytes] = []
            batches = 0
            try:
                while True:
                    received += [frame.data for frame in await session.recv_many()]
                    batches += 1
            except Disconnected as exc:
                reason = str(exc)
            await session.close()
            return received, reason, buffered_while_idle, batches

    received, reason, buffered_while_idle, batches = asyncio.run(asyncio.wait_for(main(), 60))
    assert received == [*map(message, range(MESSAGES)), "fragmented é".encode(), b"\x00\xffbinary"]
    assert reason == "server closed: code 1001 going away"
    # Reading stops once the bound is passed: at most one read (256 KiB) beyond it is buffered.
    assert 0 < buffered_while_idle <= transports.BUFFER_HIGH_BYTES + 256 * 1024
    assert batches < len(received) / 10  # handed over many at a time, not one by one


def wire_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A server's frame as it goes on the wire (unmasked), with the shortest length encoding."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 65536:
        return head + bytes([126]) + n.to_bytes(2, "big") + payload
    return head + bytes([127]) + n.to_bytes(8, "big") + payload


SIZES = (0, 1, 125, 126, 127, 65535, 65536, 70_000)


def chunked(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":  # one byte at a time, but 997 at a time within the long frames
        cut, tail = 400, max(400, len(data) - 40)
        return ([data[i:i + 1] for i in range(cut)] + [data[i:min(i + 997, tail)] for i in range(cut, tail, 997)]
                + [data[i:i + 1] for i in range(tail, len(data))])
    rng = __import__("random").Random(7)
    chunks, i = [], 0
    while i < len(data):
        n = rng.choice((1, 2, 3, 9, 127, 4000, 30000))
        chunks.append(data[i:i + n])
        i += n
    return chunks


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_websocket_frames_parsed_directly_are_those_the_library_gives_however_the_bytes_arrive(how: str) -> None:
    """Plain data frames are parsed by BatchingConnection itself, the rest by websockets: every length
    encoding, a ping answered between them, a fragmented message, then direct parsing again and a close,
    with the bytes arriving whole, a byte at a time, or in random pieces."""
    texts = [bytes([65 + i % 26]) * n for i, n in enumerate(SIZES)]
    phases = [  # each phase's bytes, then a ping the client answers (so it has taken them all)
        b"".join(wire_frame(0x1, text) for text in texts),
        wire_frame(0x1, b"frag", fin=False) + wire_frame(0x0, b"men", fin=False) + wire_frame(0x0, "t é".encode())
        + wire_frame(0x2, b"\x00\xff"),
        b"".join(wire_frame(0x1, text) for text in reversed(texts))
        + wire_frame(0x8, (1001).to_bytes(2, "big") + b"going away"),
    ]
    pongs: list[float] = []

    async def vendor(ws: ServerConnection) -> None:
        for phase in phases:
            for chunk in chunked(phase, how):
                ws.transport.write(chunk)
                await asyncio.sleep(0)
            if len(pongs) < 2:
                pongs.append(await asyncio.wait_for(await ws.ping(b"are you there"), 10))
        await ws.wait_closed()

    async def main() -> tuple[list[bytes], str, bool]:
        async with serve(vendor, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            session = WebSocketSession(ping_interval=20, connect_timeout=5, max_frame_bytes=1 << 20)
            await session.open(f"ws://127.0.0.1:{port}/", {})
            ws = session._ws
            assert ws is not None
            received: list[bytes] = []
            direct = False
            try:
                while True:
                    received += [frame.data for frame in await session.recv_many()]
                    direct = direct or ws._direct
            except Disconnected as exc:
                reason = str(exc)
            await session.close()
            return received, reason, direct

    received, reason, direct = asyncio.run(asyncio.wait_for(main(), 60))
    assert received == [*texts, "fragment é".encode(), b"\x00\xff", *reversed(texts)]
    assert reason == "server closed: code 1001 going away"
    assert len(pongs) == 2
    assert direct  # the frames were parsed here, not only by the library


@pytest.mark.parametrize(("bad", "reason"), [
    (wire_frame(0x1, b"x", rsv1=True), "reserved bit"),
    (wire_frame(0x3, b"x"), "invalid opcode"),
    (bytes([0x81, 127]) + (65 << 20).to_bytes(8, "big"), "code 1009"),  # 65 MiB: beyond max_size
    (bytes([0x81, 0x81]) + b"mask" + b"x", "incorrect masking"),  # a server's frames are not masked
])
def test_a_frame_the_library_refuses_ends_the_connection_as_before(bad: bytes, reason: str) -> None:
    """What is no plain data frame goes to websockets, which fails the connection as it always did; the
    frames before it are handed over."""

    async def vendor(ws: ServerConnection) -> None:
        ws.transport.write(wire_frame(0x1, b"before"))
        await asyncio.wait_for(await ws.ping(), 10)  # the client has taken the frame: it parses directly
        ws.transport.write(bad + wire_frame(0x1, b"after"))
        await ws.wait_closed()

    async def main() -> tuple[list[bytes], str]:
        async with serve(vendor, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            session = WebSocketSession(ping_interval=20, connect_timeout=5, max_frame_bytes=50_000)
            await session.open(f"ws://127.0.0.1:{port}/", {})
            received: list[bytes] = []
            try:
                while True:
                    received += [frame.data for frame in await session.recv_many()]
            except Disconnected as exc:
                return received, str(exc)

    received, message = asyncio.run(asyncio.wait_for(main(), 60))
    assert received == [b"before"]
    assert reason in message, message
