"""The store's one AsyncEngine (store/engine.py): every asyncpg connection of a collector comes from it,
the writer's and the claims' stay theirs (detached from the pool), the reads share pooled ones that
are pinged after an outage, and a `postgresql+asyncpg://` URL works wherever a database URL does."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from tests.conftest import query
from tests.test_collect_cli import operator_setup, wait_for
from warehouse.collect.claims import Claims
from warehouse.collect.reads import fixtures_seen, last_event_ids, last_frame_before, unclosed_connections
from warehouse.config import CollectorSettings, WriterSettings
from warehouse.records import RawMessage
from warehouse.store.database import normalise_url, redact_url, sqlalchemy_url
from warehouse.store.duckdb import libpq_dsn
from warehouse.store.engine import APPLICATION_NAME, pooled, store_engine
from warehouse.store.writer import Writer

BACKENDS = ("SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'")


def asyncpg_url(url: str) -> str:
    """The same database as SQLAlchemy's asyncpg dialect spells it, TLS as asyncpg's keyword (`ssl=`)."""
    return url.replace("postgresql://", "postgresql+asyncpg://", 1) + "&ssl=disable"


def test_a_postgresql_asyncpg_url_is_one_rule_for_every_driver() -> None:
    url = "postgresql+asyncpg://w:s3cret@db.internal:5433/odds?ssl=verify-full&target_session_attrs=read-write"
    libpq = "postgresql://w:s3cret@db.internal:5433/odds?sslmode=verify-full&target_session_attrs=read-write"
    assert normalise_url(url) == libpq
    assert sqlalchemy_url(url) == "postgresql+psycopg://" + libpq.removeprefix("postgresql://")
    assert libpq_dsn(url) == libpq  # DuckDB and psycopg
    assert redact_url(url) == "postgresql+asyncpg://w:***@db.internal:5433/odds?ssl=verify-full" \
                              "&target_session_attrs=read-write"
    for wrong in ("?ssl=true", "?ssl=require&sslmode=require", "?ssl=require&ssl=disable"):
        with pytest.raises(ValueError, match="ssl= takes one of disable, allow, prefer, require, verify-ca"):
            normalise_url("postgresql+asyncpg://w:s3cret@h/odds" + wrong)


def test_the_writer_the_claims_and_the_reads_take_every_connection_from_one_engine(db_url: str,
                                                                                  tmp_path: Path) -> None:
    """Made by the engine (its pool's events), the writer's and the claims' connections detached from the
    pool for their whole life, the reads' pooled — and nothing else connected to the database."""
    made: set[int] = set()
    detached: set[int] = set()

    async def main() -> None:
        engine = store_engine(db_url)
        event.listen(engine.sync_engine, "connect",
                     lambda dbapi, record: made.add(record.driver_connection.get_server_pid()))
        event.listen(engine.sync_engine, "detach", lambda dbapi, record: detached.add(
            engine.dialect.get_driver_connection(dbapi).get_server_pid()))
        writer = await Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool"), engine=engine).start()
        claims = Claims(db_url, CollectorSettings(name="a", claim_ttl_s=6, poll_s=0.2), ["feed"], writer)
        await claims.start()
        try:
            claim = await asyncio.wait_for(claims.acquired("feed"), 30)
            now = datetime.now(UTC)
            await writer.put(RawMessage(now, "feed", uuid.uuid4(), 1, "frame", b"{}", event_id="e1"))
            await writer.flush()
            assert writer.stats.frames == 1 and detached and len(detached) == 2  # the writer's, the claims'
            # Reads, one after the other and at the same time: never on the writer's or the claims' connection.
            reads = [last_event_ids(engine, ["feed"]), last_frame_before(engine, "feed", now + timedelta(1)),
                     fixtures_seen(engine, "feed", now - timedelta(1), bookmakers=True),
                     unclosed_connections(engine, ["feed"], {})]
            assert await asyncio.gather(*reads) == [{"feed": "e1"}, now, {}, []]
            for _ in range(3):
                async with pooled(engine) as conn:
                    assert await conn.scalar(text("SELECT pg_backend_pid()")) not in detached
            backends = dict(query(db_url, BACKENDS))
            assert set(backends) <= made and detached <= set(backends)
            assert set(backends.values()) == {APPLICATION_NAME}
            assert engine.pool.checkedout() == 0  # the dedicated ones are not the pool's
            assert claim.valid()
        finally:
            await claims.release(list(claims.held))
            await claims.aclose()
            await writer.close()
            await engine.dispose()
        # The dedicated connections closed with their holders (a backend ends a moment after its client).
        wait_for(lambda: query(db_url, BACKENDS) == [], 10, "every backend of the engine's to end")

    asyncio.run(main())


def test_a_read_after_an_outage_gets_a_live_connection(db_url: str) -> None:
    """A pooled connection whose server session ended meanwhile (an outage, a restart) is pinged at
    checkout and replaced: the read answers instead of failing once per dead connection."""

    async def main() -> None:
        engine = store_engine(db_url)
        try:
            assert await last_event_ids(engine, ["feed"]) == {}
            async with pooled(engine) as conn:
                stale = await conn.scalar(text("SELECT pg_backend_pid()"))
            query(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s", stale)
            wait_for(lambda: not query(db_url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", stale), 10,
                     "the backend to end")
            assert await last_event_ids(engine, ["feed"]) == {}
            async with pooled(engine) as conn:
                assert await conn.scalar(text("SELECT pg_backend_pid()")) != stale
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_db_upgrade_and_collect_on_a_postgresql_asyncpg_url(empty_db_url: str, tmp_path: Path) -> None:
    """End to end, as an operator writes SQLAlchemy's asyncpg URL: migrations, then a collector whose
    connections to the database (asyncpg's, all from its engine) carry the engine's application_name."""
    url = asyncpg_url(empty_db_url)
    command, env = operator_setup(url, tmp_path)
    upgrade = subprocess.run([*command, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    assert query(empty_db_url, "SELECT count(*) FROM alembic_version") == [(1,)]
    # Once frames of both feeds are stored: the backends on the database then are the collector's (its
    # writer's, its claims', its reads' kept in the pool; its schema check at start, psycopg's, ended
    # long before), each with the engine's application_name.
    watching = psycopg.connect(empty_db_url, autocommit=True)
    simulators = subprocess.Popen([*command, "simulate"], env=env, stderr=subprocess.PIPE, text=True)
    collector = subprocess.Popen([*command, "collect"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: watching.execute("SELECT count(DISTINCT source) FROM raw_messages").fetchall() == [(2,)],
                 60, "frames from both feeds")
        backends = dict(watching.execute(BACKENDS).fetchall())
        collector.send_signal(signal.SIGINT)
        _, log = collector.communicate(timeout=60)
        assert collector.returncode == 0, log[-2000:]
    finally:
        collector.kill()
        simulators.send_signal(signal.SIGTERM)
        simulators.communicate(timeout=30)
        watching.close()
    assert len(backends) >= 2 and set(backends.values()) == {APPLICATION_NAME}, backends
    assert query(empty_db_url, "SELECT source, detail->>'reason' FROM collector_events WHERE event = 'disconnect'"
                               " ORDER BY source") == [("oddspapi", "shutdown"), ("saba", "shutdown")]


def test_the_claims_read_a_takeovers_watch_as_values(db_url: str, tmp_path: Path) -> None:
    """The claims' connection is the engine's, jsonb decoded: a first take watches nothing (before, the
    text '[]' was taken for a watch, so a feed with identities was watched for good), a takeover
    watches its previous epoch's late frames."""

    async def hold(name: str) -> tuple[Any, bool]:
        writer = await Writer(db_url, WriterSettings(spool_dir=tmp_path / "spool")).start()
        claims = Claims(db_url, CollectorSettings(name=name, claim_ttl_s=1.5, poll_s=0.2), ["mm"], writer,
                        identified=["mm"])
        await claims.start()
        try:
            claim = await asyncio.wait_for(claims.acquired("mm"), 30)
            return claim.took, "mm" in writer.fencing.watched
        finally:
            await claims.aclose()  # killed, as it were: the claim is not released
            await writer.close()

    first, watched = asyncio.run(hold("a"))
    assert (first.why, first.watch, watched) == ("first", [], False)
    again, watched = asyncio.run(hold("b"))  # once the claim expired, and was watched unrenewed
    assert again.why == "expired without a standby" and watched
    assert [(w["epoch"], w["settled"]) for w in again.watch] == [(1, False)]
