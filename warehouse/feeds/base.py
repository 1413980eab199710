"""The contract between a feed module and the shared runtime.

A feed module is pure: it turns one parsed frame (plus its own per-connection state) into
records, and describes — as data — how the runtime should connect. It never opens a socket,
touches the database or reads the clock: `received_at` comes in with every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from warehouse.records import Record


class FrameError(ValueError):
    """The frame is valid JSON but does not fit the vendor's schema; the message says where."""


# What a frame tells the runtime about the connection, beyond records.
HEARTBEAT = "heartbeat"  # liveness only (feeds the watchdog)
INITIAL = "initial"  # a full snapshot starts (e.g. Saba status 1)
RESET = "reset"  # the server lost our place and sent a full snapshot instead (Saba status 3)
RETRY = "retry"  # the server asks us to go away and come back (maintenance, internal error)
RETRY_LONG = "retry_long"  # ... after a long pause (maintenance, rejected credentials)
FATAL = "fatal"  # configuration error: retrying cannot help; stop this feed
ERROR = "error"  # the vendor reported an error; keep the connection
SUBSCRIBED = "subscribed"  # the vendor confirmed a subscription (detail: what was granted)


@dataclass
class Output:
    """Records derived from one frame, the raw message kind, and any control signal."""

    kind: str
    records: list[Record] = field(default_factory=list)
    control: str | None = None
    detail: dict[str, Any] | None = None  # for the collector_events row a control signal makes


@dataclass(frozen=True)
class Login:
    """An HTTP login the runtime performs to obtain a bearer token (e.g. Saba's /login)."""

    url: str
    refresh_url: str | None
    body: dict[str, str]
    token_field: str = "access_token"
    lifetime_s: float = 600.0


@dataclass(frozen=True)
class ConnectSpec:
    """How to open one connection. `url` and `headers` may hold secrets: the runtime redacts them."""

    transport: Literal["ws", "sse"]
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    send_on_connect: tuple[str, ...] = ()
    periodic: tuple[tuple[float, str], ...] = ()  # (every N seconds, message): pings, re-subscriptions
    send_on_close: tuple[str, ...] = ()  # sent before a clean shutdown (e.g. MM unsubscribe)
    bearer_from_login: Login | None = None  # the runtime adds `Authorization: Bearer <token>`
    resume_header: str | None = None  # e.g. Last-Event-ID, filled from the last event id stored


def parse_time(value: Any) -> datetime | None:
    """Vendor timestamps: ISO-8601 (with or without zone: none means UTC) or epoch seconds."""
    if type(value) is str:  # the common case first
        try:
            parsed = datetime.fromisoformat(value)  # 3.11 takes "Z" and "+00:00" alike
        except ValueError:
            raise FrameError(f"timestamp expected, got {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FrameError(f"timestamp expected, got {value!r}")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):
            raise FrameError(f"timestamp out of range: {value!r}") from None
    raise FrameError(f"timestamp expected, got {value!r}")


def to_decimal(value: Any) -> Decimal | None:
    """Exact decimal from a JSON number or a numeric string (CKEX sends strings)."""
    if type(value) is int:  # exact already; no detour through text
        return Decimal(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise FrameError(f"number expected, got {value!r}")
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise FrameError(f"number expected, got {value!r}") from None
    if not result.is_finite():
        raise FrameError(f"finite number expected, got {value!r}")
    return result


def to_float(value: Any) -> float | None:
    kind = type(value)
    if kind is float:  # the common case first: JSON numbers arrive as float or int
        if value != value or value in (float("inf"), float("-inf")):
            raise FrameError(f"finite number expected, got {value!r}")
        return value
    if kind is int:
        return float(value)
    if value is None:
        return None
    return float(to_decimal(value))  # type: ignore[arg-type]


def to_int(value: Any) -> int | None:
    if value is None:
        return None
    number = to_decimal(value)
    if number is None or number != number.to_integral_value():
        raise FrameError(f"integer expected, got {value!r}")
    return int(number)


def to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise FrameError(f"true/false expected, got {value!r}")


def to_text(value: Any) -> str | None:
    """Vendor ids arrive as strings or numbers; they are stored as text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError(f"id expected, got {value!r}")


def obj(value: Any, *where: str) -> dict[str, Any]:
    """`value` if it is a JSON object; else FrameError naming the path (its parts are joined with
    "." only then: this runs for every object of every frame)."""
    if type(value) is not dict:
        raise FrameError(f"{'.'.join(where)}: object expected, got {type(value).__name__}")
    return value


def handle(adapter: Any, message: Any, received_at: datetime) -> Output:
    """The adapter boundary: an Output, or FrameError for anything the frame made go wrong — an
    unexpected type deep in a frame must quarantine that frame, never stop the feed."""
    try:
        return adapter.handle(message, received_at)
    except FrameError:
        raise
    except RecursionError:
        raise FrameError("nested too deeply") from None
    except Exception as exc:  # deliberately total: this is the boundary
        raise FrameError(f"unexpected {type(exc).__name__}: {exc}") from exc
