"""The writer's connection to PostgreSQL: connecting (with the codecs its COPY needs), noticing that
it went down (saying so, then waiting a jittered backoff before the next try), the coming days'
partitions and the pruning of old batch ids, and raw ids reserved ahead of need."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from warehouse import exactjson
from warehouse.backoff import Backoff
from warehouse.config import WriterSettings
from warehouse.schema import RAW_ID_BLOCK
from warehouse.store.database import redact_url
from warehouse.store.engine import dedicated
from warehouse.store.homes import WrongWarehouse, claim, identity_of

log = logging.getLogger("warehouse.writer")
NEVER_REACHED_EVERY_S = 60.0  # how often to repeat that the database was never reachable since the start
SECOND_RETRY_S = 60.0  # after the second connection could not be opened, writing stays on one this long
ID_BLOCKS_AHEAD = 4  # blocks of raw ids reserved beyond a batch's need (ids of a restart are a gap)


class Health(Protocol):
    """Where the connection reports how the database is (the writer's stats, read by metrics and status)."""

    database_up: bool
    database_reached: bool  # ever, since the writer started: if not, the URL may well be wrong
    last_error: str | None
    outages: int


class WriterConnection:
    """One asyncpg connection, the engine's but dedicated to the writer (store/engine.py: its codecs and
    transactions are the writer's; the pool never resets or lends it), made again after an outage once
    the backoff has passed; and, opened when the writer first has a batch ready while another commits,
    a second one (`other`) that takes turns with it. An outage closes both."""

    def __init__(self, url: str, engine: AsyncEngine, settings: WriterSettings, health: Health,
                 spool_dir: Path) -> None:
        self.url = url  # for messages
        self.engine = engine
        self.settings = settings
        self.health = health
        self.spool_dir = spool_dir  # named in the messages: where frames go while the database is away
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self._next_connect = 0.0
        self._down_since: float | None = None
        self._started = time.monotonic()
        self._told_never_reached = float("-inf")
        self._partition_day = -1
        self._ids: list[int] = []  # raw ids reserved and not used yet, in order
        self._spool_claimed = False
        self._second: asyncpg.Connection | None = None
        self._second_after = 0.0  # monotonic time before which no second connection is tried
        self._second_refused = False  # said so already
        self._maintaining = asyncio.Lock()  # one partition maintenance at a time, whichever connection asks

    async def ensure(self) -> bool:
        """Connected, or connected now; False while the database is away (or the backoff runs)."""
        if self._connected():
            return True
        async with self._lock:
            return self._connected() or await self._connect()  # another task may have connected meanwhile

    async def ready(self, conn: asyncpg.Connection | None = None) -> asyncpg.Connection:
        """The connection (or `conn`, one of the two), with today's partitions made; ConnectionError if
        there is none."""
        conn = conn if conn is not None else self._conn
        if conn is None or conn.is_closed():
            raise ConnectionError("not connected")
        if self._partition_day != _utc_day():
            await self._maintain_partitions(conn)
        return conn

    async def other(self, busy: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """The connection that is not `busy` (the first when none is): the second is opened on the first
        call that needs it. None when it cannot be had: the caller writes on one connection."""
        if busy is None or busy is self._second:
            return self._conn if self._connected() else None
        if self._second is not None and not self._second.is_closed():
            return self._second
        if time.monotonic() < self._second_after or not self._connected():
            return None
        conn = None
        try:
            conn = await dedicated(self.engine)
            await install_codecs(conn)
        except Exception as exc:  # not an outage: the first connection works (max_connections reached, say)
            if conn is not None:
                conn.terminate()
            self._second_after = time.monotonic() + SECOND_RETRY_S
            (log.debug if self._second_refused else log.warning)(
                "writer: a second connection to the database could not be opened (%s); writing on one, trying"
                " again every %.0f s (set [writer] connections = 1 not to)", one_line(f"{type(exc).__name__}: {exc}"),
                SECOND_RETRY_S)
            self._second_refused = True
            return None
        if not self._connected():  # an outage while it was opened: the second goes with the first
            conn.terminate()
            return None
        self._second = conn
        return conn

    async def reserve_ids(self, conn: asyncpg.Connection, count: int) -> Iterator[int]:
        """Ids for `count` raw frames. Each nextval() of the sequence owns a block of ids; blocks
        are taken a few at a time ahead of need, so most batches cost no round trip for ids."""
        if count > len(self._ids):
            blocks = -(-(count - len(self._ids)) // RAW_ID_BLOCK) + ID_BLOCKS_AHEAD
            starts = await conn.fetch("SELECT nextval('raw_messages_id_seq') FROM generate_series(1, $1)", blocks)
            for (start,) in starts:
                self._ids.extend(range(start, start + RAW_ID_BLOCK))
        ids, self._ids = self._ids[:count], self._ids[count:]
        return iter(ids)

    async def went_down(self, exc: BaseException) -> None:
        """Say what happened (loudly and again if the database was never reached), drop the connection."""
        message = one_line(f"{type(exc).__name__}: {exc}")
        now = time.monotonic()
        health = self.health
        if not health.database_reached and now - self._told_never_reached >= NEVER_REACHED_EVERY_S:
            # Not an outage but perhaps a wrong URL: say so until it is fixed, not once.
            self._told_never_reached = now
            log.error("writer: the database %s has not been reachable since the start %.0f s ago (%s); frames are"
                      " spooled to %s. If the URL is wrong, stop (Ctrl-C), fix --database-url or [database] url"
                      " and start again: the spool is kept", redact_url(self.url), now - self._started, message,
                      self.spool_dir)
        elif self._down_since is None and health.database_reached:
            log.error("writer: database unavailable (%s); spooling to %s", message, self.spool_dir)
        if self._down_since is None:
            self._down_since = now
            health.outages += 1
        health.database_up = False
        health.last_error = message
        self._next_connect = time.monotonic() + self._backoff.next()
        await self.close()

    async def close(self) -> None:
        conns, self._conn, self._second = (self._conn, self._second), None, None
        for conn in conns:
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), 2)
                except Exception:
                    conn.terminate()

    @property
    def open(self) -> int:
        return sum(conn is not None and not conn.is_closed() for conn in (self._conn, self._second))

    def _connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def _connect(self) -> bool:
        if time.monotonic() < self._next_connect:
            return False
        conn = None
        try:
            conn = await dedicated(self.engine)
            await install_codecs(conn)
            if not self._spool_claimed:  # a spool holds one warehouse's batches: this database's
                await self._claim_spool(conn)
            await self._maintain_partitions(conn, again=True)
        except Exception as exc:
            if conn is not None:
                conn.terminate()
            if isinstance(exc, WrongWarehouse):  # nothing is written here until the spool is this database's
                log.error("writer: %s", exc)
            await self.went_down(exc)
            return False
        self._conn = conn
        # Ids reserved on an earlier connection are forgotten: if the server crashed, the sequence
        # may not have kept their reservation, and would hand them out again.
        self._ids = []
        self._backoff.reset()
        if self._down_since is not None:
            back = "reachable for the first time" if not self.health.database_reached else "is back"
            log.warning("writer: database %s after %.1f s", back, time.monotonic() - self._down_since)
            self._down_since = None
        self.health.database_up = self.health.database_reached = True
        return True

    async def _claim_spool(self, conn: asyncpg.Connection) -> None:
        owner = await identity_of(conn)
        with contextlib.suppress(OSError):  # an unusable spool directory: the writer says so, and collects without it
            claim(self.spool_dir, owner, "the spool")
        self._spool_claimed = True

    async def _maintain_partitions(self, conn: asyncpg.Connection, *, again: bool = False) -> None:
        """Create the coming days' partitions and prune old batch ids: at connect (`again`) and once a day,
        one connection at a time, within the statement timeout (it waits for the locks of open COPYs)."""
        today = _utc_day()
        first = datetime.fromtimestamp(today * 86400, UTC).date()
        days = self.settings.partition_days_ahead
        async with self._maintaining, asyncio.timeout(self.settings.statement_timeout_s):
            if self._partition_day == today and not again:  # done meanwhile, on the other connection
                return
            await conn.execute("SELECT warehouse_ensure_partitions($1, $2)", first, days)
            await conn.execute(
                "DELETE FROM ingest_batches WHERE committed_at < now() - make_interval(days => $1)",
                self.settings.ingest_batches_retention_days,
            )
        self._partition_day = today


async def install_codecs(conn: asyncpg.Connection) -> None:
    """How the writer's values travel: jsonb from Python values (or JSON text as bytes), json as its text."""
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="binary", encoder=encode_jsonb,
                              decoder=decode_jsonb)
    # json's binary form is its text: a raw frame's bytes go as they are, and come back so — as bytea's do,
    # whose codec is asyncpg's own (no Python call a frame). Anything but bytes is refused (TypeError).
    await conn.set_builtin_type_codec("json", schema="pg_catalog", codec_name="bytea")
    # timestamptz as microseconds since 2000 (the wire's form): half of what asyncpg's own encoder costs a
    # value (it compares each one with ±infinity first), and a frame has ~5 (docs/performance.md, "Firehose").
    await conn.set_type_codec("timestamptz", schema="pg_catalog", format="tuple", encoder=encode_timestamptz,
                              decoder=decode_timestamptz)
    # numeric: asyncpg's own encoder costs ~1.6 µs a Decimal (as_tuple(), then its digits as Python ints);
    # a feed's stakes and prices are the same few Decimal objects again and again (feeds/values.py remembers
    # them), so each one's encoding is kept with it (docs/performance.md, "COPY's values at the codec boundary").
    await conn.set_type_codec("numeric", schema="pg_catalog", format="binary", encoder=encode_numeric,
                              decoder=decode_numeric)


def encode_jsonb(value: Any) -> bytes:
    # bytes are JSON text already; everything else is a Python value to serialise, numbers exact (a
    # frame's Decimal or 20-digit integer is a jsonb number, as sent).
    if isinstance(value, bytes):
        return b"\x01" + value
    return b"\x01" + exactjson.dumps(value)


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INFINITY, _MINUS_INFINITY = 2**63 - 1, -(2**63)


# The two values encoded last, the latest first, each with its encoding: a price_ticks row holds the
# batch's received_at (shared by frames received together) and the vendor's source_ts (shared by the rows
# of one frame), so encoding alternates between two values, each encoded once.
_latest: tuple[Any, tuple[int]] = (object(), (0,))
_before: tuple[Any, tuple[int]] = (object(), (0,))


def encode_timestamptz(value: Any) -> tuple[int]:
    global _latest, _before
    if value is _latest[0]:
        return _latest[1]
    if value is _before[0]:
        _latest, _before = _before, _latest
        return _latest[1]
    try:  # the common case: an aware datetime
        encoded = ((value - _PG_EPOCH) // _MICROSECOND,)
    except TypeError:
        pass
    else:
        _latest, _before = (value, encoded), _latest
        return encoded
    # What asyncpg's own encoder takes besides: its ±infinity (naive datetime.max/min), a naive datetime
    # or a date as local time.
    if type(value) is datetime and value in (datetime.max, datetime.min):
        return (_INFINITY if value == datetime.max else _MINUS_INFINITY,)
    if isinstance(value, date):
        local = value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
        return ((local.astimezone(UTC) - _PG_EPOCH) // _MICROSECOND,)
    raise TypeError(f"a datetime expected for a timestamptz, got {type(value).__name__}")


def decode_timestamptz(value: tuple[int]) -> datetime:
    microseconds = value[0]
    if microseconds in (_INFINITY, _MINUS_INFINITY):  # as asyncpg's own decoder gives them
        return datetime.max if microseconds == _INFINITY else datetime.min
    return _PG_EPOCH + timedelta(microseconds=microseconds)


# numeric's binary form (PostgreSQL's numeric_send): int16 ndigits, weight, sign, dscale, then ndigits base-10000
# digits. What asyncpg's own codec does (pgproto/codecs/numeric.pyx), value for value, error for error.
_NUMERIC_POS, _NUMERIC_NEG, _NUMERIC_NAN, _NUMERIC_PINF, _NUMERIC_NINF = 0x0000, 0x4000, 0xC000, 0xD000, 0xF000
_MAX_DSCALE = 0x3FFF
_HEAD = struct.Struct("!hhHh")
_HEAD_READ = struct.Struct("!HhHH")
# Decimals encoded lately, by identity, each held with its encoding (so that its id names no other object
# while it is here); forgotten all at once when full.
_numerics: dict[int, tuple[Decimal, bytes]] = {}
_NUMERICS_KEPT = 4096


def encode_numeric(value: Any) -> bytes:
    known = _numerics.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    encoded = _numeric_binary(value if isinstance(value, Decimal) else Decimal(value))
    if type(value) is Decimal:
        if len(_numerics) >= _NUMERICS_KEPT:
            _numerics.clear()
        _numerics[id(value)] = (value, encoded)
    return encoded


def _numeric_binary(number: Decimal) -> bytes:
    sign, digits, exponent = number.as_tuple()
    if exponent in ("n", "N"):
        return _HEAD.pack(0, 0, _NUMERIC_NAN, 0)
    if exponent == "F":
        return _HEAD.pack(0, 0, _NUMERIC_NINF if sign else _NUMERIC_PINF, 0)
    assert isinstance(exponent, int)
    if exponent < 0 and -exponent > _MAX_DSCALE:
        raise ValueError("cannot encode Decimal value into numeric: exponent is too small")
    dweight = len(digits) + exponent - 1
    weight = (dweight + 4) // 4 - 1 if dweight >= 0 else -((-dweight - 1) // 4 + 1)
    if weight > 2**16 - 1:
        raise ValueError("cannot encode Decimal value into numeric: exponent is too large")
    padding = (weight + 1) * 4 - (dweight + 1)
    count = (len(digits) + padding + 3) // 4
    if count > 2**16 - 1:
        raise ValueError("cannot encode Decimal value into numeric: number of digits is too large")
    padded = (0,) * padding + digits + (0,) * (count * 4 - padding - len(digits))
    groups = [padded[i] * 1000 + padded[i + 1] * 100 + padded[i + 2] * 10 + padded[i + 3]
              for i in range(0, count * 4, 4)]
    dscale = -exponent if exponent < 0 else 0
    head = _HEAD.pack(_int16(count), _int16(weight), _NUMERIC_NEG if sign else _NUMERIC_POS, dscale)
    return head + struct.pack(f"!{count}h", *groups)


def _int16(value: int) -> int:
    """As C casts to int16_t: wrapped (a weight beyond it is refused by PostgreSQL, as it is from asyncpg)."""
    return (value + 2**15) % 2**16 - 2**15


def decode_numeric(data: bytes) -> Decimal:
    """The Decimal asyncpg's own decoder makes (its text: "0.", the digits, the exponent), e.g. 1E+4 for 10000."""
    count, weight, sign, dscale = _HEAD_READ.unpack_from(data)
    if sign == _NUMERIC_NAN:
        return Decimal("NaN")
    if sign in (_NUMERIC_PINF, _NUMERIC_NINF):
        return Decimal("-Infinity" if sign == _NUMERIC_NINF else "Infinity")
    if not count:
        return Decimal(f"0e-{dscale}")
    groups = struct.unpack_from(f"!{count}h", data, _HEAD.size)
    first = groups[0]
    padding = (3 if first < 10 else 2 if first < 100 else 1 if first < 1000 else 0) if weight >= 0 else 0
    digits = (str(first) if weight >= 0 else f"{first:04d}") + "".join(f"{group:04d}" for group in groups[1:])
    if dscale:  # exactly dscale fractional digits: zeros added, or the last group's trailing zeros dropped
        adjust = dscale - (count - weight - 1) * 4
        digits = digits + "0" * adjust if adjust > 0 else digits[:len(digits) + adjust]
    exponent = (weight + 1) * 4 - padding
    return Decimal(f"{'-' if sign == _NUMERIC_NEG else ''}0.{digits}" + (f"E{exponent:+d}" if exponent else ""))


def decode_jsonb(data: bytes) -> Any:
    return exactjson.loads(data[1:])


def one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _utc_day() -> int:
    return int(time.time() // 86400)
