"""The record types, one per table: the vocabulary every layer speaks.

Records are NamedTuples on purpose: a record *is* the tuple the writer hands to COPY, so the hot
path never converts between shapes. Field names are column names of the table `TABLE_OF` names
(warehouse.schema declares the types; tests/test_schema.py proves the two agree). Derived records
carry no `raw_id`: the writer assigns raw ids and prepends them, because the id only exists once
the raw frame is being written.

Conventions:
- timestamps are timezone-aware `datetime`s (UTC); `received_at` is always our clock,
  `source_ts` the vendor's (None when the vendor sends none);
- vendor ids are `str`;
- `origin` (last, so positional construction keeps working) is None for rows from pushed frames
  and names the REST call for rows from a resync (`ORIGIN_SNAPSHOT`, `ORIGIN_BACKFILL`);
- jsonb columns (`attrs`, `payload`, `old`, `changes`, `detail`) take plain Python values
  (dict/list/str/int/float/bool/None), except `RawMessage.payload` (a json column), which is the
  frame's JSON text as `bytes`: stored as it is, byte for byte.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, NamedTuple
from uuid import UUID

Json = Any


class RawMessage(NamedTuple):
    """One frame as received (secrets redacted). `payload` is None when it was not valid JSON."""

    received_at: datetime
    source: str
    connection_id: UUID
    seq: int
    kind: str
    payload: bytes | None
    event_id: str | None = None


# An SSE event's `event:` type, when not the default "message", follows the frame's kind:
# `status-0;event=update`. It comes from the wire, not the payload: replay carries it over.
EVENT_TYPE_MARK: Final = ";event="


def with_event_type(kind: str, event_type: str | None) -> str:
    return f"{kind}{EVENT_TYPE_MARK}{event_type}" if event_type else kind


def event_type_of(kind: str) -> str | None:
    _, mark, event_type = kind.partition(EVENT_TYPE_MARK)
    return event_type if mark else None


class PriceTick(NamedTuple):
    received_at: datetime
    source: str
    bookmaker: str | None
    fixture_id: str
    market_id: str
    outcome_id: str
    price: float | None
    player_id: str | None = None
    line: Decimal | None = None
    side: str | None = None  # "back" / "lay" on exchanges, else None
    active: bool | None = None
    status: str | None = None
    max_stake: Decimal | None = None
    source_ts: datetime | None = None
    attrs: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class MarketChange(NamedTuple):
    received_at: datetime
    source: str
    fixture_id: str
    market_id: str
    action: str  # add / change / remove / status
    bookmaker: str | None = None
    status: str | None = None
    source_ts: datetime | None = None
    attrs: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class FixtureChange(NamedTuple):
    received_at: datetime
    source: str
    fixture_id: str
    action: str  # add / change / remove
    bookmaker: str | None = None  # None for fixture-level metadata
    start_time: datetime | None = None
    status: str | None = None
    source_ts: datetime | None = None
    changes: Json = None  # only the fields that changed, as the vendor sent them
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class ScoreChange(NamedTuple):
    received_at: datetime
    source: str
    fixture_id: str
    period: str | None = None
    home_score: int | None = None
    away_score: int | None = None
    minute: int | None = None
    live: bool | None = None
    status: str | None = None
    source_ts: datetime | None = None
    attrs: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class OrderChange(NamedTuple):
    received_at: datetime
    source: str
    event: str  # INSERT / UPDATE
    order_id: str | None
    fixture_id: str | None = None
    outcome_id: str | None = None
    exchange: str | None = None
    exchange_order_id: str | None = None
    order_status: str | None = None
    matched_status: str | None = None
    price: Decimal | None = None  # as the vendor sent it (orderCents)
    stake: Decimal | None = None
    matched_stake: Decimal | None = None
    source_ts: datetime | None = None
    payload: Json = None
    old: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class BetChange(NamedTuple):
    received_at: datetime
    source: str
    event: str
    bet_id: str | None
    order_id: str | None = None
    bookmaker: str | None = None
    bet_status: str | None = None
    price: Decimal | None = None  # placedPrice
    stake: Decimal | None = None  # placedStake
    source_ts: datetime | None = None
    payload: Json = None
    old: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class AccountChange(NamedTuple):
    received_at: datetime
    source: str
    event: str
    account_id: str | None = None
    source_ts: datetime | None = None
    payload: Json = None
    old: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class EmergencyEvent(NamedTuple):
    received_at: datetime
    source: str
    emergency: bool | None
    reason: str | None = None
    source_ts: datetime | None = None
    payload: Json = None
    origin: str | None = None  # None: pushed; ORIGIN_SNAPSHOT / ORIGIN_BACKFILL: from a REST answer


class CollectorEvent(NamedTuple):
    """A lifecycle event of a connection: what lets an analyst tell "no change" from "no data"."""

    received_at: datetime
    source: str
    connection_id: UUID | None
    event: str  # one of the EVENT_* names below
    detail: Json = None


class Quarantine(NamedTuple):
    """A frame (or a record derived from it) that could not be used, with the reason."""

    received_at: datetime
    source: str
    connection_id: UUID | None
    reason: str
    frame: str | None


class ExportRun(NamedTuple):
    """One exported table-day, as warehouse_record_export takes it (the export's, not the collector's writer's)."""

    table_name: str
    day: date
    rows: int
    bytes: int
    path: str
    sha256: str
    started_at: datetime
    finished_at: datetime


# Collector event names (the `event` column of collector_events).
EVENT_CONNECT = "connect"
EVENT_DISCONNECT = "disconnect"
EVENT_RECONNECT_ATTEMPT = "reconnect_attempt"
EVENT_SUBSCRIBE = "subscribe"
EVENT_COMMAND = "command"
EVENT_RESUME = "resume"
EVENT_RESET = "reset"
EVENT_SNAPSHOT = "snapshot"  # the vendor starts sending its full state (e.g. Saba status 1)
EVENT_WATCHDOG_TIMEOUT = "watchdog_timeout"
EVENT_ERROR = "error"
EVENT_DROPPED = "dropped"  # frames received but not kept (e.g. spool disk full), with counts
SHUTDOWN = "shutdown"  # the `reason` of a disconnect the collector made on purpose (a planned gap)
EVENT_RESYNC_STARTED = "resync_started"  # REST calls to heal a gap begin (detail: what they cover)
EVENT_RESYNC_FINISHED = "resync_finished"  # ... and ended (detail: calls, refused, failed, rows derived)

# The `origin` of rows derived from a REST answer (None: from a pushed frame).
ORIGIN_SNAPSHOT: Final = "snapshot"  # the vendor's current state, fetched after a gap
ORIGIN_BACKFILL: Final = "backfill"  # the vendor's history of the gap itself

Record = (
    PriceTick | MarketChange | FixtureChange | ScoreChange | OrderChange | BetChange | AccountChange
    | EmergencyEvent | CollectorEvent | Quarantine
)

# Which table each record type the writer takes goes to. Raw messages are handled by the writer itself.
TABLE_OF: dict[type[Record], str] = {
    PriceTick: "price_ticks",
    MarketChange: "market_changes",
    FixtureChange: "fixture_changes",
    ScoreChange: "score_changes",
    OrderChange: "order_changes",
    BetChange: "bet_changes",
    AccountChange: "account_changes",
    EmergencyEvent: "emergency_events",
    CollectorEvent: "collector_events",
    Quarantine: "quarantine",
}
