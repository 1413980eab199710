"""Soak: all four simulated vendors at a mixed load against a collector process, with a database
outage and a collector kill in the middle; then what was sent is compared with what was stored.

    python bench/soak.py                          # 10 minutes, a 3-minute database outage at 1/3,
                                                  # SIGKILL + restart of the collector at 2/3
    python bench/soak.py --minutes 2 --outage 20

Reports per feed: frames sent by the vendor, stored, stored twice, frames lost (only possible inside
a recorded gap: those in flight when the collector was killed), gaps recorded; and for the collector:
peak RSS and spool peak. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import discard, scratch_server  # noqa: E402
from tests.harness import CollectorProcess  # noqa: E402
from warehouse.simulate.fleet import FleetThread  # noqa: E402
from warehouse.store import migrate  # noqa: E402

RATES = {"oddspapi": 300, "saba": 60, "ckex": 20, "mm": 10}  # frames/s of market changes per vendor


def counts(url: str, sql: str) -> dict[str, int]:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            return dict(conn.execute(sql).fetchall())
    except psycopg.OperationalError:
        return {}


def spool_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.rglob("*") if p.is_file()) if spool.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=180.0, help="seconds the database is down")
    args = parser.parse_args()
    seconds = args.minutes * 60
    workdir, server = scratch_server("soak")
    url = server.url()
    migrate.upgrade(url)
    peak_rss = peak_spool = 0
    events: list[str] = []
    try:
        with FleetThread(RATES) as vendors:
            collector = CollectorProcess(url, workdir, vendors.fleet)
            collector.start()
            started = time.monotonic()
            outage_at, kill_at = seconds / 3, 2 * seconds / 3
            outage_until = None
            killed = False
            while (elapsed := time.monotonic() - started) < seconds:
                if outage_until is None and elapsed >= outage_at:
                    server.stop("immediate")
                    outage_until = elapsed + args.outage
                    events.append(f"{elapsed:.0f} s: database crashed (immediate stop)")
                elif outage_until is not None and outage_until > 0 and elapsed >= outage_until:
                    server.start()
                    outage_until = -1
                    events.append(f"{elapsed:.0f} s: database back after {args.outage:.0f} s")
                elif not killed and elapsed >= kill_at and outage_until == -1:
                    collector.signal(signal.SIGKILL)
                    time.sleep(2)
                    collector.start()
                    killed = True
                    events.append(f"{elapsed:.0f} s: collector killed (SIGKILL), restarted 2 s later")
                with contextlib.suppress(psutil.NoSuchProcess):
                    peak_rss = max(peak_rss, psutil.Process(collector.process.pid).memory_info().rss)
                peak_spool = max(peak_spool, spool_bytes(collector.spool))
                if sys.stderr.isatty():
                    print(f"\r{elapsed:5.0f}/{seconds:.0f} s  sent {sum(vendors.fleet.sent().values()):,}"
                          f"  spool {spool_bytes(collector.spool) / 2**20:.1f} MiB", end="", file=sys.stderr)
                time.sleep(1)
            sent = vendors.stop_sending()
            saba_ids = {i for ids in vendors.fleet.simulators["saba"].sent.values() for i in ids}
            # Let the backlog drain: stored counts stop changing.
            previous, still = None, 0
            while still < 5:
                now = counts(url, "SELECT source, count(*) FROM raw_messages GROUP BY 1")
                still = still + 1 if now == previous else 0
                previous = now
                time.sleep(1)
            collector.signal(signal.SIGTERM)
        stored = counts(url, "SELECT source, count(*) FROM raw_messages GROUP BY 1")
        twice = counts(url, "SELECT source, count(*) - count(DISTINCT (connection_id, seq)) FROM raw_messages"
                            " GROUP BY 1")
        gaps = counts(url, "SELECT source, count(*) FROM collector_events WHERE event = 'disconnect' GROUP BY 1")
        with psycopg.connect(url, autocommit=True) as conn:
            saba_stored = [r[0] for r in conn.execute(
                "SELECT event_id FROM raw_messages WHERE source = 'saba'").fetchall()]
    finally:
        discard(workdir, server)

    print(f"\n\nsoak: {args.minutes:g} min at {RATES} market changes/s")
    for line in events:
        print(f"  {line}")
    lost = {feed: count - stored.get(feed, 0) for feed, count in sent.items()}
    lost["saba"] = len(saba_ids - set(saba_stored))  # what Saba sent twice (resent after a resume) counts once
    print("\n| feed | frames sent | stored | stored twice | lost (inside a recorded gap) | disconnects recorded |")
    print("|---|---:|---:|---:|---:|---:|")
    for feed, count in sent.items():
        print(f"| {feed} | {count:,} | {stored.get(feed, 0):,} | {twice.get(feed, 0)} | {lost[feed]:,} |"
              f" {gaps.get(feed, 0)} |")
    saba_ok = len(saba_stored) == len(set(saba_stored)) and set(saba_stored) == saba_ids
    print(f"\nSaba event ids: {len(set(saba_stored)):,} stored of {len(saba_ids):,} distinct sent"
          f" ({'every one, once' if saba_ok else 'MISMATCH'}); resent frames after resume count in 'sent'.")
    print(f"collector peak RSS {peak_rss / 2**20:.0f} MiB, spool peak {peak_spool / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
