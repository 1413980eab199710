"""Transports without a vendor: a failed connect names scheme://host:port and nothing secret;
Retry-After as seconds. (Frames through real connections: test_saba.py, test_oddspapi.py, test_tls.py.)"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

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
