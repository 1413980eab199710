"""`demo --days`: past days of simulated matches, written as a collector would have written them."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tests.conftest import query
from warehouse import replay
from warehouse.simulate import history

DAY = date(2026, 11, 2)


def test_a_past_day_is_an_afternoon_collected_that_day_seeded_and_derived_by_the_real_adapter(
        db_url: str, tmp_path: Path) -> None:
    (played,) = asyncio.run(history.play(db_url, [DAY], seed=5, spool_dir=tmp_path / "spool"))
    assert played.frames > 3000 and played.rows > 3 * played.frames / 2 and played.fixtures >= 8
    source = history.SOURCE
    start = datetime(2026, 11, 2, 12, tzinfo=UTC)
    (first, last, frames), = query(db_url, "SELECT min(received_at), max(received_at), count(*) FROM raw_messages"
                                           " WHERE source = %s", source)
    assert frames == played.frames and start <= first < start + timedelta(minutes=1)
    assert start + history.SESSION - timedelta(minutes=1) < last < start + history.SESSION
    # the vendor's own times are the market's (the day played), not the wall clock's
    (stamped,), = query(db_url, "SELECT max(source_ts) FROM price_ticks WHERE source = %s", source)
    assert stamped is not None and stamped.date() == DAY
    # every table the OddsPapi feed fills, on that day's partition (not the default one)
    for table in ("price_ticks", "fixture_changes", "score_changes"):
        assert query(db_url, f"SELECT count(*) > 0 FROM {table}_p20261102 WHERE source = %s", source) == [(True,)]
        assert query(db_url, f"SELECT count(*) FROM {table}_default") == [(0,)]
    # one connection, connected and stopped on purpose: a planned gap, nothing for status to alarm on
    events = query(db_url, "SELECT event, detail->>'reason', detail->>'feed_kind' FROM collector_events"
                           " WHERE source = %s ORDER BY received_at", source)
    assert events == [("connect", None, "oddspapi-ws"), ("disconnect", "shutdown", None)]
    # the rows are what today's adapter derives from the frames, as if collected
    report = replay.check(source, url=db_url)
    assert report.clean and report.frames == played.frames
    assert report.tables["price_ticks"].matched > 10_000

    # seeded: the same day again gives the same matches, prices and times (another connection)
    asyncio.run(history.play(db_url, [DAY], seed=5, spool_dir=tmp_path / "spool"))
    runs = query(db_url, "SELECT r.connection_id, array_agg(ARRAY[p.received_at::text, p.fixture_id, p.bookmaker,"
                         " p.outcome_id, p.price::text] ORDER BY p.received_at, r.seq, p.outcome_id)"
                         " FROM price_ticks AS p JOIN raw_messages AS r ON r.id = p.raw_id GROUP BY 1")
    assert len(runs) == 2 and runs[0][1] == runs[1][1]
