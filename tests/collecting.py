"""Helpers to run the real collector against simulators and a real database, with time bounds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Text
from sqlalchemy.dialects.postgresql import JSONB

from tests.conftest import query
from warehouse import schema as tables
from warehouse.collect.service import collect
from warehouse.collect.settings import FeedSettings, feed_settings
from warehouse.config import WriterSettings, load_config


def feeds_from_toml(tmp_path: Path, text: str, env: dict[str, str]) -> list[FeedSettings]:
    path = tmp_path / "feeds.toml"
    path.write_text(text)
    return feed_settings(load_config(path), env)


def fast(**overrides: object) -> str:
    """TOML lines that make reconnects and the watchdog quick enough for tests."""
    values = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "backoff_long_s": 0.5, "silence_timeout_s": 5.0,
              **overrides}
    return "\n".join(f"{k} = {v}" for k, v in values.items())


async def run_collector(url: str, feeds: list[FeedSettings], spool_dir: Path, until: Callable[[], bool],
                        timeout: float = 30.0, reload: Callable[[], list[FeedSettings]] | None = None) -> None:
    """Collect until `until()` holds (checked every 50 ms) or `timeout` passes, then stop cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(collect(url, feeds, WriterSettings(spool_dir=spool_dir), stop=stop, reload=reload))
    deadline = time.monotonic() + timeout
    try:
        while not await asyncio.to_thread(until):
            if task.done():
                await task
                raise AssertionError("collector ended by itself")
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def after(seconds: float) -> Callable[[], bool]:
    """A condition that holds once `seconds` have passed (to collect for a fixed time)."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


def collect_live(simulator: Any, db_url: str, tmp_path: Path, toml_for: Callable[[str], str], env: dict[str, str],
                 until: Callable[[], bool], reload: bool = False) -> None:
    """Start `simulator`, collect from it with the config `toml_for(its url)` until `until()`, stop both."""

    async def main() -> None:
        url = await simulator.start()
        feeds = feeds_from_toml(tmp_path, toml_for(url), env)
        read = (lambda: feeds_from_toml(tmp_path, (tmp_path / "feeds.toml").read_text(), env)) if reload else None
        try:
            await run_collector(db_url, feeds, tmp_path / "spool", until, reload=read)
        finally:
            await simulator.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def assert_secret_nowhere(db_url: str, secret: str, log_text: str) -> None:
    """The secret is in no log line and in no text or jsonb column of any table."""
    assert secret not in log_text
    for table in tables.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, Text | JSONB):
                hits = query(db_url, f"SELECT count(*) FROM {table.name} WHERE {column.name}::text LIKE %s",
                             f"%{secret}%")
                assert hits == [(0,)], f"{table.name}.{column.name} holds the secret"


class HalfOpen:
    """A TCP relay in front of a simulator whose connections can go half-open: `cut()` makes every
    open connection stop relaying in both directions without closing it (a dead NAT entry, a pulled
    cable). New connections relay normally. Has the simulator's start()/stop() for collect_live."""

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator
        self._server: asyncio.Server | None = None
        self._clients: list[asyncio.StreamWriter] = []  # our side of each relayed connection
        self._upstreams: list[asyncio.StreamWriter] = []  # the simulator's side
        self._cut: set[int] = set()

    async def start(self) -> str:
        url = await self.simulator.start()
        target = urlsplit(url)
        self._server = await asyncio.start_server(
            lambda r, w: self._relay(r, w, target.hostname, target.port), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return url.replace(f":{target.port}", f":{port}", 1)

    def cut(self) -> None:
        self._cut.update(id(writer) for writer in self._clients)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: Any, port: Any) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        self._clients.append(writer)
        self._upstreams.append(upstream_writer)
        key = id(writer)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    if key not in self._cut:
                        sink.write(data)
                        await sink.drain()
            if key not in self._cut:
                sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._clients + self._upstreams:
            writer.close()
        await self.simulator.stop()
