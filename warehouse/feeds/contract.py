"""What a feed kind is, written down: the contract between one vendor's module and the shared runtime.

A feed kind declares its options, says how to connect (data the runtime acts on) and makes a pure
`Adapter` per connection: a parsed frame in, an `Output` out, no I/O, no clock. Its REST side, if
any, describes the calls that heal a gap and derives each answer from the stored request alone, so
replay gets the same rows. docs/adding-a-feed.md walks through writing one; docs/resync.md the REST side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from warehouse.options import setting
from warehouse.records import ORIGIN_BACKFILL, ORIGIN_SNAPSHOT, RawMessage, Record


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
    """Pure and per connection: one parsed frame → an Output, or FrameError (the frame is quarantined).

    An adapter may also have `handle_text(data: bytes, received_at) -> Output | None`: its commonest
    frames straight from their JSON text (e.g. decoded into their shape with msgspec), giving exactly
    what `handle` gives for the decoded frame, and None for any frame it leaves to `handle` (one it
    does not take, or one to refuse: `handle` says why). derive() tries it first."""

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


# -- REST: healing gaps ---------------------------------------------------------------------------

Origin = Literal["snapshot", "backfill"]
REST_ORIGINS: tuple[str, ...] = (ORIGIN_SNAPSHOT, ORIGIN_BACKFILL)


@dataclass(frozen=True)
class RestRequest:
    """One REST call of a resync, as data: the runtime performs it (pacing, retries, redaction) and
    stores the answer as a frame of kind `<origin>:<path>`. `params` and `headers` may hold secrets."""

    origin: Origin  # what the rows derived from the answer are: the vendor's state, or its history of the gap
    base: str  # e.g. https://api.oddspapi.io, or the vendor's versioned base …/v4 (see rest_endpoint)
    path: str  # e.g. /v4/odds: also the endpoint its cooldown and Retry-After apply to
    params: tuple[tuple[str, str], ...] = ()  # the query, in order
    headers: tuple[tuple[str, str], ...] = ()
    cooldown_s: float = 0.0  # the vendor's minimum interval between two calls to this endpoint
    page_size: int | None = None  # paged: page=1, 2, … with pageSize until a page holds fewer items
    covers: str = ""  # what it is about (a fixture id, "orders"), for the resync's collector_events rows
    scope: tuple[tuple[str, str], ...] = ()  # our own parameters, never sent: kept with the answer for its adapter

    @property
    def url(self) -> str:
        """Where the call goes (without the query)."""
        return rest_endpoint(self.base, self.path)

    def call(self, params: tuple[tuple[str, str], ...] | None = None) -> RestCall:
        return RestCall(self.origin, self.path, dict(self.params if params is None else params), dict(self.scope))


@dataclass(frozen=True)
class RestCall:
    """A REST answer's request as stored with it: `raw_messages.kind` is `<origin>:<path>`, and
    `event_id` is `GET <path>?<query>[#<scope>]` with secrets masked. All a REST adapter may use."""

    origin: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    scope: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return f"{self.origin}:{self.path}"

    @property
    def event_id(self) -> str:
        query = f"?{urlencode(list(self.params.items()))}" if self.params else ""
        return f"GET {self.path}{query}" + (f"#{urlencode(list(self.scope.items()))}" if self.scope else "")

    @classmethod
    def stored(cls, kind: str, event_id: str) -> RestCall:
        """The call back from a stored frame (what replay does); ValueError if it is no REST answer."""
        origin, _, path = kind.partition(":")
        method, _, target = event_id.partition(" ")
        if origin not in REST_ORIGINS or method != "GET" or not path:
            raise ValueError(f"not a stored REST answer: kind {kind!r}, event_id {event_id!r}")
        parts = urlsplit(target)
        return cls(origin, path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                   dict(parse_qsl(parts.fragment, keep_blank_values=True)))


def is_rest_kind(kind: str) -> bool:
    """Whether a raw frame of this kind is a REST answer (see RestCall)."""
    return kind.partition(":")[0] in REST_ORIGINS and ":" in kind


@dataclass(frozen=True)
class ResyncContext:
    """What the runtime knows when a resync starts (feeds read no clock and no database)."""

    now: datetime  # when the resync starts
    gap_started: datetime | None  # the last frame before the gap (None: none stored: a first start)
    fixtures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # seen lately → bookmakers seen (if asked)


@dataclass(frozen=True)
class RestPolicy:
    """How a feed's resyncs run, from its options."""

    enabled: bool
    calls_per_s: float  # at most this many calls per second, besides each endpoint's cooldown
    timeout_s: float  # an answer may take this long
    fixtures_hours: float | None = None  # the context lists fixtures seen in this many hours (None: not needed)
    bookmakers: bool = False  # ... each with the bookmakers seen for it


def rest_base(stream_url: str, rest_url: str) -> str:
    """`rest_url`, or by default the stream's host: wss://api.oddspapi.io/v4/ws → https://api.oddspapi.io
    (a simulator's ws://127.0.0.1:8765/… → http://127.0.0.1:8765: the REST twin on its port)."""
    if rest_url:
        return rest_url.rstrip("/")
    parts = urlsplit(stream_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def rest_endpoint(base: str, path: str) -> str:
    """`path` (/v4/odds) under `base`, given as the host (https://api.oddspapi.io) or as the base the
    vendor documents (https://api.oddspapi.io/v4, https://mmapi.55-tech.com/api/v1): the segments the
    base ends with and the path begins with are written once. Any other prefix (a proxy's /oddspapi)
    is kept."""
    parts = urlsplit(base)
    have = [s for s in parts.path.split("/") if s]
    want = [s for s in path.split("/") if s]
    shared = next((n for n in range(min(len(have), len(want)), 0, -1) if have[-n:] == want[:n]), 0)
    prefix = "".join(f"/{s}" for s in have[:len(have) - shared])
    return f"{parts.scheme}://{parts.netloc}{prefix}{path}"


# The REST keys of a feed with a REST side: one declaration each, used by each such feed's options.
def rest_url_setting(host: str, version: str) -> Any:
    return setting(f"REST base URL: the host ({host}) or the vendor's versioned base ({host}{version}); default:"
                   " the stream's host over https", "")


def resync_setting() -> Any:
    return setting("after every gap, fetch the vendor's state over REST while the stream is already stored", True)


def rest_calls_setting(default: float) -> Any:
    return setting("at most this many REST calls per second (besides the vendor's per-endpoint cooldowns)",
                   default, positive=True)


def rest_timeout_setting() -> Any:
    return setting("a REST answer may take this long (seconds)", 30.0, positive=True)


OptionsT = TypeVar("OptionsT")


class Feed(ABC, Generic[OptionsT]):
    """One feed kind (one vendor protocol). Subclass it, set the attributes, register one instance."""

    kind: str  # the config's `kind`, e.g. "oddspapi-ws"
    version: str  # bump whenever the records derived from some frame change: replay --check reports it
    options: type[OptionsT]  # a frozen dataclass of `setting(...)` fields (secret=True: names an env variable)
    default_silence_s: float  # the watchdog's limit unless the config sets silence_timeout_s
    max_connections_per_key: int | None = None  # the vendor's limit across every feed of a config
    identifies_events: bool = False  # its pushed frames carry the vendor's identity of an event (see identity)
    doc: str = ""  # one line for `warehouse --help` and the docs
    # market id → outcome id → name, for ids the vendor's frames never name (charts label them)
    outcome_names: Mapping[str, Mapping[str, str]] = MappingProxyType({})

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

    def identity(self, raw: RawMessage, records: Sequence[Record]) -> str | None:
        """The vendor's identity of the event a pushed frame carries (None: it has none), the same
        whoever receives it: what keeps one event from being stored twice across a handover of the
        feed (docs/claims.md). Never called for REST answers. A feed that gives one says so with
        `identifies_events`."""
        return None

    def rest_policy(self, options: OptionsT) -> RestPolicy | None:
        """Whether and how this feed heals gaps over REST (None: it has no REST side)."""
        return None

    def resync(self, options: OptionsT, secrets: Mapping[str, str], context: ResyncContext) -> Sequence[RestRequest]:
        """The REST calls that bring the warehouse up to date after a gap."""
        return ()

    def rest_adapter(self, source: str, options: OptionsT, call: RestCall) -> Adapter:
        """A pure adapter for one REST answer: its JSON → records with `origin` = call.origin. Output.detail
        {"items": n} tells the runtime how many items a page held (paged requests stop at a short page)."""
        raise NotImplementedError(f"{self.kind} has no REST side")


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
