"""The spool's way back into the database: its batches committed oldest first, each by the writer's own
write (so a replayed batch whose id is already in `ingest_batches` is skipped), in one background task
at a time that stops quietly when the database goes away again and is started again once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

from warehouse.store.connection import WriterConnection
from warehouse.store.spool import Spool, Unit, UnusableSpool
from warehouse.store.spoolcodec import Epochs

log = logging.getLogger("warehouse.writer")
DRAIN_POLL_S = 0.05  # how often a wait for the spool to drain looks again (it may need a reconnection first)

# Commit a spooled batch (received under these claim epochs); False if the database went away first.
Write = Callable[[UUID, list[Unit], Epochs], Awaitable[bool]]


class SpoolReplayer:
    def __init__(self, spool: Spool | UnusableSpool, connection: WriterConnection, write: Write, name: str) -> None:
        self.spool = spool
        self.connection = connection
        self.write = write
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start replaying unless a replay runs already (checked again after the await: one task only)."""

        def wanted() -> bool:
            return (self._task is None or self._task.done()) and self.spool.pending

        if wanted() and await self.connection.ensure() and wanted():
            self._task = asyncio.create_task(self._replay(), name=f"replay-{self.name}")

    async def drained(self, timeout: float) -> bool:
        """Replay until nothing is left in the spool, for up to `timeout` s; True if it emptied."""
        deadline = time.monotonic() + timeout
        while self.spool.pending:
            if time.monotonic() > deadline:
                return False
            await self.start()
            await asyncio.sleep(DRAIN_POLL_S)
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _replay(self) -> None:
        replayed = 0
        while (entry := self.spool.peek()) is not None:
            if not await self.write(*entry, self.spool.head_epochs):
                return
            self.spool.commit_head()
            replayed += 1
        if replayed:
            log.info("writer: spool replayed (%d batches); writing directly again", replayed)
