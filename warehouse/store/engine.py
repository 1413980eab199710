"""The store's one SQLAlchemy `AsyncEngine` (`postgresql+asyncpg`): every asyncpg connection a
collector (or any writer) opens comes from it, so how to connect — the URL with its TLS settings,
the connect timeout, server settings, the statement cache — is said here and nowhere else.

Two ways to take a connection (docs/architecture.md, "Connections"):
- `engine.connect()`, pooled, for short reads: a connection that comes back from the pool is pinged
  first (`pool_pre_ping`), so one that died in an outage is replaced instead of failing the read.
- `dedicated(engine)`, for a holder of session state (the writer: its codecs and transactions; the
  claims: LISTEN): the connection is detached from the pool at once and is its holder's for its whole
  life. The pool never resets, pings or hands it to anyone else; closing it closes it.

Both hand out the asyncpg connection underneath: COPY and the writer's statements go to the driver
directly, so the hot path pays nothing to SQLAlchemy per batch or per row.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from warehouse.config import WriterSettings
from warehouse.store.database import normalise_url

APPLICATION_NAME = "warehouse"  # pg_stat_activity.application_name of its connections, unless the URL names one
POOL_SIZE = 2  # idle connections kept for the reads (a resync's, a takeover's); dedicated ones are not counted
MAX_OVERFLOW = 8  # reads at the same time beyond those
STATEMENT_CACHE_SIZE = 100  # asyncpg's prepared statements per connection (its default; 0 behind a transaction pooler)


def store_engine(url: str, *, connect_timeout_s: float = WriterSettings().connect_timeout_s) -> AsyncEngine:
    """The engine on `url` (any form normalise_url takes: libpq URL or keywords, `postgresql+asyncpg://`…).

    The URL goes to asyncpg whole, as `dsn`: asyncpg reads a libpq URL as libpq does — sslmode,
    sslrootcert/sslcert/sslkey, several hosts with target_session_attrs, a socket directory in
    `host=`, any other parameter as a server setting. SQLAlchemy's own translation of a URL would
    pass its query keys to asyncpg as keyword arguments, which refuses sslmode and the like."""
    dsn = normalise_url(url)
    server_settings = {}
    if "application_name" not in dict(parse_qsl(urlsplit(dsn).query)):
        server_settings["application_name"] = APPLICATION_NAME
    connect_args: dict[str, Any] = {"dsn": dsn, "timeout": connect_timeout_s, "server_settings": server_settings,
                                    "statement_cache_size": STATEMENT_CACHE_SIZE}
    return create_async_engine("postgresql+asyncpg://", connect_args=connect_args, pool_pre_ping=True,
                               pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)


async def dedicated(engine: AsyncEngine) -> asyncpg.Connection:
    """A connection of `engine`'s for one holder's whole life, detached from the pool (see the module's
    doc); the caller closes (or terminates) it. Errors are the driver's own, as from asyncpg.connect."""
    try:
        conn = await engine.connect()
    except SQLAlchemyError as exc:
        raise driver_error(exc) from None
    raw = await conn.get_raw_connection()
    driver: asyncpg.Connection = raw.driver_connection
    raw.detach()  # its session state is its holder's: never reset, pinged or lent by the pool
    return driver


@contextlib.asynccontextmanager
async def pooled(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """`async with engine.connect()`, whose errors are the driver's own (see driver_error)."""
    try:
        async with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise driver_error(exc) from None


def driver_error(exc: SQLAlchemyError) -> Exception:
    """The driver's exception beneath SQLAlchemy's wrapping (asyncpg's, or OSError): the store's callers
    tell outages from refusals by asyncpg's classes and sqlstates, as before the engine. Anything else
    of SQLAlchemy's (the pool's timeout) is a ConnectionError: the database is not available now."""
    if isinstance(exc, DBAPIError) and exc.orig is not None and isinstance(exc.orig.__cause__, Exception):
        return exc.orig.__cause__
    return ConnectionError(f"{type(exc).__name__}: {exc}")
