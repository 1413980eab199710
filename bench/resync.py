"""Resync benchmark: how long healing a gap of N OddsPapi fixtures takes against the simulator.

    python bench/resync.py                 # N = 10 and 100
    python bench/resync.py --fixtures 10 100 1000 --bookmakers 6

For each N: a fresh database, the OddsPapi simulator holding N fixtures (each priced by
`--bookmakers` bookmakers, 1X2: 3 selections each), a collector that stores them from the stream;
then the socket drops, the collector reconnects and resyncs: /v4/odds and /v4/scores for every
fixture, at the vendor's cooldowns (500 ms and 1000 ms per endpoint, the two endpoints in
parallel) and the default cap of 5 calls a second. Prints, per N, the calls, the rows derived and
the seconds from the resync's start to its end (its collector_events rows). Not a test: figures
depend on the machine; the cooldowns make N × 1 s (the /v4/scores cooldown) the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from warehouse.collect.service import collect  # noqa: E402
from warehouse.collect.settings import feed_settings  # noqa: E402
from warehouse.config import WriterSettings, config_from_text  # noqa: E402
from warehouse.simulate.oddspapi import OddsPapiSimulator  # noqa: E402
from warehouse.store import migrate  # noqa: E402

KEY = "bench-resync-oddspapi-key"
BOOKMAKERS = ("pinnacle", "bet365", "stake", "22bet", "starcasino.be", "betfair-ex", "1xbet", "sbobet")


def script(fixtures: int, bookmakers: int) -> list[bytes]:
    """Every fixture's 1X2 prices at every bookmaker, as the stream pushes them (one message each)."""
    now = datetime.now(UTC).isoformat()
    frames = []
    for f in range(fixtures):
        for book in BOOKMAKERS[:bookmakers]:
            outcomes = {o: {"players": {"0": {"active": True, "changedAt": now, "limit": None, "playerName": None,
                                              "price": 1.5 + f % 7 + int(o) % 3, "playerId": 0}}}
                        for o in ("101", "102", "103")}
            frames.append(orjson.dumps({"fixtureId": f"id1{f:017d}", "bookmakerOdds": {
                book: {"markets": {"101": {"outcomes": outcomes}}}}}))
    return frames


async def until(check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.1)


async def one(url: str, fixtures: int, bookmakers: int, workdir: Path) -> dict[str, float]:
    frames = script(fixtures, bookmakers)
    simulator = OddsPapiSimulator(KEY, script=frames, generate=False)
    ws_url = await simulator.start()
    toml = (f'[[feeds]]\nname = "oddspapi"\nkind = "oddspapi-ws"\nurl = "{ws_url}"\napi_key_env = "KEY"\n'
            "backoff_initial_s = 0.05\nbackoff_max_s = 0.2\nbackoff_long_s = 0.5\n")
    feeds = feed_settings(config_from_text(toml, "bench"), {"KEY": KEY})
    stop = asyncio.Event()
    task = asyncio.create_task(collect(url, feeds, WriterSettings(spool_dir=workdir / f"spool-{fixtures}"),
                                       stop=stop))

    def scalar(sql: str) -> int:
        with psycopg.connect(url) as conn:
            return int(conn.execute(sql).fetchone()[0])

    await until(lambda: scalar("SELECT count(*) FROM raw_messages WHERE kind = 'price'") == len(frames), 300)
    await until(lambda: scalar("SELECT count(*) FROM collector_events WHERE event = 'resync_started'")
                == scalar("SELECT count(*) FROM collector_events WHERE event = 'resync_finished'"), 600)
    simulator.faults.reject_all_keys = True
    simulator.drop_connections()
    await asyncio.sleep(0.3)
    simulator.faults.reject_all_keys = False
    reconnect = "FROM collector_events WHERE event = 'resync_finished' AND detail->>'reason' = 'reconnect'"
    await until(lambda: scalar(f"SELECT count(*) {reconnect}") == 1, 36 * fixtures + 60)
    stop.set()
    await task
    await simulator.stop()
    with psycopg.connect(url) as conn:
        detail = conn.execute(f"SELECT detail {reconnect}").fetchone()[0]
    return {"calls": detail["calls"], "refused": detail["refused"], "failed": detail["failed"],
            "rows": detail["rows"], "seconds": detail["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixtures", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--bookmakers", type=int, default=6, choices=range(1, len(BOOKMAKERS) + 1))
    args = parser.parse_args()
    workdir, server = scratch_server("resync")
    results = {}
    try:
        admin = server.url()
        migrate.upgrade(admin)
        for n in args.fixtures:
            url = create_database(admin, f"resync_{n}", template="warehouse")
            print(f"resync of {n} fixtures …", file=sys.stderr)
            results[n] = asyncio.run(one(url, n, args.bookmakers, workdir))
    finally:
        discard(workdir, server)
    print(f"\nresync after a gap, OddsPapi simulator, {args.bookmakers} bookmakers × 3 selections per fixture\n")
    print("| fixtures | calls | refused (429) | failed | rows derived | seconds | seconds per fixture |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in results.items():
        print(f"| {n} | {r['calls']} | {r['refused']} | {r['failed']} | {r['rows']:,} | {r['seconds']:.1f} |"
              f" {r['seconds'] / n:.2f} |")


if __name__ == "__main__":
    main()
