"""Past days of simulated matches, written as if they had been collected: `warehouse demo --days N`.

Each day is an afternoon of football on the OddsPapi simulator's market, played in virtual time:
the market's clock is set to that day, its changes are rendered by the simulator into the vendor's
frames (as it would send them), each frame goes through the real adapter (`derive`, as a collector
and replay do) and the frame with its rows through the normal writer, between a connect and a
planned disconnect of its own connection, under the source `oddspapi-history`. So the rows of a
past day are what a collector would have stored that day (received_at on that day), and export,
retention, replay and the relations treat them as any other day. Seeded: the same seed gives the
same matches every day it is played.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import orjson

from warehouse.config import FeedConfig, WriterSettings, config_from_text
from warehouse.feeds.derive import derive
from warehouse.options import to_table
from warehouse.records import EVENT_CONNECT, EVENT_DISCONNECT, SHUTDOWN, CollectorEvent
from warehouse.replay.postgres import ensure_partitions
from warehouse.simulate import oddspapi
from warehouse.simulate.market import Market
from warehouse.store.writer import Writer

# A source of its own: the live demo's `oddspapi` feed would otherwise resync these fixtures after its
# first connect (seen in the last resync_hours) from today's simulator, which never heard of them (404s).
SOURCE = "oddspapi-history"
FIRST_KICKOFF_UTC = timedelta(hours=12, minutes=30)  # the afternoon's first match starts then
SESSION = timedelta(hours=4)  # of play recorded each day: two rounds of matches on every pitch
STEP_S = 3.0  # virtual seconds between the market's changes (a quiet feed: about 1,300 frames an hour)
MATCH_S = 90 * 60.0  # real football time
KICKOFF_IN_S = 30 * 60.0  # a fixture appears half an hour before its kick-off
_FEED = f'''
[[feeds]]
name = "{SOURCE}"
kind = "{oddspapi.VENDOR.kind}"
url = "ws://127.0.0.1/v4/ws"
api_key_env = "FLEET_ODDSPAPI_KEY"
'''


@dataclass
class DayPlayed:
    day: date
    frames: int = 0
    rows: int = 0
    fixtures: int = 0


def days_before(today: date, count: int) -> list[date]:
    """The `count` days before `today`, oldest first."""
    return [today - timedelta(days=back) for back in range(count, 0, -1)]


async def play(url: str, days: list[date], seed: int, spool_dir: Path | None = None,
               progress: Callable[[DayPlayed], None] | None = None) -> list[DayPlayed]:
    """Write a simulated afternoon of each of `days` into the migrated database at `url`."""
    if not days:
        return []
    await asyncio.to_thread(ensure_partitions, url, min(days), (max(days) - min(days)).days + 1)
    feed = config_from_text(_FEED, "the demo's history").feeds[0]
    settings = WriterSettings(spool_dir=spool_dir)
    played = []
    async with Writer(url, settings, name="demo-history") as writer:
        for day in days:
            played.append(await _day(writer, feed, day, seed))
            if progress:
                progress(played[-1])
        await writer.flush()
    return played


async def _day(writer: Writer, feed: FeedConfig, day: date, seed: int) -> DayPlayed:
    """One afternoon: a connection of its own, the market's changes rendered and derived, a planned stop."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC) + FIRST_KICKOFF_UTC - timedelta(seconds=KICKOFF_IN_S)
    clock = [start.timestamp()]
    market = Market(seed=seed * 1000 + day.toordinal() % 1000, match_s=MATCH_S, kickoff_in_s=KICKOFF_IN_S,
                    clock=lambda: clock[0])
    simulator = oddspapi.OddsPapiSimulator("history", market=market, record=False)
    adapter = feed.feed.adapter(SOURCE, feed.options)
    connection = uuid4()
    report = DayPlayed(day)
    await writer.put(None, [CollectorEvent(start, SOURCE, connection, EVENT_CONNECT, {
        "url": feed.options.url, "transport": "ws", "connection": 1, "history": "warehouse demo --days",
        "feed_kind": feed.feed.kind, "adapter_version": feed.feed.version,
        "options": orjson.loads(orjson.dumps(to_table(feed.options)))})])
    fixtures: set[str] = set()
    seq = steps = 0
    end = (start + SESSION).timestamp()
    while clock[0] < end:
        received_at = datetime.fromtimestamp(clock[0], UTC)
        for frame in simulator.render(market.step()):
            seq += 1
            derived = derive(adapter, feed.feed.kind, frame, received_at=received_at, source=SOURCE,
                             connection_id=connection, seq=seq, event_id=None,
                             max_frame_bytes=feed.tuning.max_frame_bytes)
            await writer.put(derived.raw, derived.records)
            report.frames += 1
            report.rows += len(derived.records)
        fixtures.update(fixture.fixture_id for fixture in market.fixtures)
        clock[0] += STEP_S
        steps += 1
        if steps % 64 == 0:
            await asyncio.sleep(0)  # let the writer commit as it goes (put() does not wait while there is room)
    await writer.put(None, [CollectorEvent(datetime.fromtimestamp(clock[0], UTC), SOURCE, connection,
                                           EVENT_DISCONNECT, {"reason": SHUTDOWN})])
    report.fixtures = len(fixtures)
    return report
