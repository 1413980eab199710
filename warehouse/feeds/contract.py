"""What a feed kind is, written down: the contract between one vendor's module and the shared runtime.

A feed kind is one `Feed` instance in `warehouse.feeds.registry`. It declares its options (a frozen
dataclass: types, defaults and documentation in one place), says how to connect (`connect` →
`ConnectSpec`, data the runtime acts on), and makes a pure `Adapter` per connection: one parsed
frame plus `received_at` in, an `Output` out. It never opens a socket, touches the database or
reads the clock. Hooks cover where vendors differ: `decode` (a frame as received → the JSON text
stored and parsed), `refused` (what an HTTP refusal of the connection means), `reload_commands`
(commands that apply new options to a live connection) and `validate` (rules across options).

docs/adding-a-feed.md walks through writing one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from warehouse.options import setting
from warehouse.records import Record


class FrameError(ValueError):
    """The frame is valid JSON but does not fit the vendor's schema; the message says where."""


# What a frame tells the runtime about the connection, beyond records.
HEARTBEAT: Final = "heartbeat"  # liveness only (feeds the watchdog)
INITIAL: Final = "initial"  # a full snapshot starts (e.g. Saba status 1)
RESET: Final = "reset"  # the server lost our place and sent a full snapshot instead (Saba status 3)
RETRY: Final = "retry"  # the server asks us to go away and come back (maintenance, internal error)
RETRY_LONG: Final = "retry_long"  # ... after a long pause (maintenance, rejected credentials)
FATAL: Final = "fatal"  # configuration error: retrying cannot help; stop this feed
ERROR: Final = "error"  # the vendor reported an error; keep the connection
SUBSCRIBED: Final = "subscribed"  # the vendor confirmed a subscription (detail: what was granted)
Control = Literal["heartbeat", "initial", "reset", "retry", "retry_long", "fatal", "error", "subscribed"]


@dataclass
class Output:
    """Records derived from one frame, the frame's class (stored as `raw_messages.kind`), and any
    control signal for the runtime."""

    frame_kind: str
    records: list[Record] = field(default_factory=list)
    control: Control | None = None
    detail: dict[str, Any] | None = None  # for the collector_events row a control signal makes


class Adapter(Protocol):
    """Pure and per connection: one parsed frame → an Output, or FrameError (the frame is quarantined)."""

    def handle(self, message: Any, received_at: datetime) -> Output: ...


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


@dataclass(frozen=True)
class Reaction:
    """What the runtime does after the server refused a connection with an HTTP status."""

    fatal: bool = False  # retrying cannot help (a configuration error): stop this feed
    long: bool = False  # pause `backoff_long_s` before the next attempt, unless the server named a delay
    reauthenticate: bool = False  # the login token is no good: log in again next time


@dataclass(frozen=True, kw_only=True)
class Tuning:
    """Keys every feed takes besides its own: timeouts, backoff, frame size, TLS."""

    silence_timeout_s: float | None = setting(
        "nothing received for this long: the watchdog reconnects (default: the feed kind's own)", None)
    ping_interval_s: float = setting("WebSocket ping interval; a pong must come within as long", 20.0, positive=True)
    connect_timeout_s: float = setting("opening a connection may take this long", 10.0, positive=True)
    max_frame_bytes: int = setting("larger frames are quarantined with their size", 8 * 1024 * 1024, positive=True)
    backoff_initial_s: float = setting("first reconnect delay; doubles per failed attempt, with jitter", 1.0,
                                       positive=True)
    backoff_max_s: float = setting("the reconnect delay grows up to this", 60.0, positive=True)
    backoff_long_s: float = setting("pause after a refused key/token, HTTP 429/503 or vendor maintenance, when the"
                                    " server names no Retry-After", 300.0, positive=True)
    stable_after_s: float = setting("a connection that lived this long resets the backoff", 30.0, positive=True)
    ca_file: str = setting("a PEM bundle of a private CA to trust besides the system's (wss:// and https://)", "")


OptionsT = TypeVar("OptionsT")


class Feed(ABC, Generic[OptionsT]):
    """One feed kind (one vendor protocol). Subclass it, set the attributes, register one instance."""

    kind: str  # the config's `kind`, e.g. "oddspapi-ws"
    version: str  # bump whenever the records derived from some frame change: replay --check reports it
    options: type[OptionsT]  # a frozen dataclass of `setting(...)` fields (secret=True: names an env variable)
    default_silence_s: float  # the watchdog's limit unless the config sets silence_timeout_s
    max_connections_per_key: int | None = None  # the vendor's limit across every feed of a config
    doc: str = ""  # one line for `warehouse --help` and the docs

    @abstractmethod
    def connect(self, options: OptionsT, secrets: Mapping[str, str], resume_id: str | None) -> ConnectSpec:
        """How to open the next connection; `secrets` maps each secret option to its value."""

    @abstractmethod
    def adapter(self, source: str, options: OptionsT) -> Adapter:
        """A fresh adapter for one connection (state never outlives a connection)."""

    def validate(self, options: OptionsT) -> str | None:
        """A problem across options (each one's type is checked already), as a phrase, or None."""
        return None

    def decode(self, data: bytes, limit: int) -> bytes:
        """A frame as received → the JSON text that is stored and parsed (e.g. decompressed). A result
        longer than `limit` bytes is quarantined as too large: stop decoding past it. Raise FrameError
        for a frame that cannot be decoded (it is quarantined with the reason)."""
        return data

    def refused(self, status: int, body: str) -> Reaction:
        """What an HTTP refusal of the connection means for this vendor."""
        if status in (401, 403):
            return Reaction(long=True, reauthenticate=True)
        return Reaction(long=status in (429, 503))

    def reload_commands(self, old: OptionsT, new: OptionsT) -> Sequence[str]:
        """Messages that apply `new` options to a live connection (none: the next connection applies them)."""
        return ()


def handle(adapter: Adapter, message: Any, received_at: datetime) -> Output:
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
