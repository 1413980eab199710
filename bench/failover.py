"""Failover: how long a feed goes uncollected when its holder dies or is stopped, and what it costs.

    python bench/failover.py                        # 20 SIGKILLs, then 20 clean stops (SIGTERM), claim_ttl_s = 10
    python bench/failover.py --kills 20 --stops 0   # … the kills alone (losses are counted over the whole run)
    python bench/failover.py --kills 5 --stops 5 --ttl 4
    python bench/failover.py --firehose main        # … then the firehose with claims vs that commit, same run
    python bench/failover.py --json                 # the figures as JSON

Two `warehouse collect` processes, each with a data directory of its own, on one private PostgreSQL
and the four simulated vendors (warehouse/simulate/fleet.py) at a mixed load. Each handover stops the
process holding every feed — SIGKILL (it dies: the standby waits out the claims' TTL) or SIGTERM (a
clean stop: it releases its claims, a NOTIFY wakes the standby) — waits for the other to collect every
feed, then starts the stopped one again as the standby. Per feed and handover:

- **takeover**: from the signal to the new holder's connection opening at the vendor (the simulator
  counts its connections: the clock is the same process's), median and max;
- **not listening**: from the old connection's close to the new one's open, at the vendor;
- **frames lost**: frames the vendor sent that are not stored (those on the wire when the holder
  died), per handover; Saba's counts distinct event ids and must be 0 (it resumes from the last
  stored id: what was on the wire is sent again). A vendor never sends anything to nobody, so the
  market's changes while nobody listened are not "sent": OddsPapi and MM heal them over REST.

`--firehose REV` then runs bench/firehose.py with `--baseline REV --repeat 3 --frames 200000 --rate 0`,
for OddsPapi and for Saba: frames/s committed by this revision's collector (claims: a fence in every commit's
round trip) against REV's (before claims), alternated in the same run. Not a test: the figures depend
on the machine.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import discard, scratch_server  # noqa: E402
from tests.harness import CollectorProcess  # noqa: E402
from warehouse.simulate.fleet import FleetThread  # noqa: E402
from warehouse.store import migrate  # noqa: E402

RATES = {"oddspapi": 100, "saba": 40, "ckex": 20, "mm": 20}  # market changes per second, by vendor
SOURCES = tuple(RATES)


def say(text: str) -> None:
    if sys.stderr.isatty():
        print(text, file=sys.stderr, flush=True)


def query(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params or None).fetchall()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def holders(url: str) -> dict[str, str]:
    return dict(query(url, "SELECT feed, holder FROM collector_claims WHERE holder_process IS NOT NULL"))


def handover(url: str, vendors: FleetThread, processes: dict[str, CollectorProcess], how: signal.Signals,
             ) -> dict[str, tuple[float, float]]:
    """Stop the holder with `how`; per feed (takeover s, not listening s) as the vendor saw them."""
    holder = holders(url)["saba"]
    standby = next(name for name in processes if name != holder)
    wait_for(lambda: query(url, "SELECT bool_and(NOT solo) FROM collector_claims")[0][0], 60,
             "the holder to know its standby")
    streams = {name: member.simulator.streams for name, member in vendors.fleet.members.items()}
    before = {name: len(s.changes) for name, s in streams.items()}
    signalled = time.monotonic()
    processes[holder].process.send_signal(how)  # type: ignore[union-attr]
    wait_for(lambda: all(_reopened(s.changes[before[name]:]) for name, s in streams.items()), 120,
             f"{standby} to connect every feed")
    processes[holder].process.wait(timeout=60)  # type: ignore[union-attr]
    result = {}
    for name, s in streams.items():
        changes = s.changes[before[name]:]
        closed = next(t for t, open_ in changes if open_ == 0)
        opened = next(t for t, open_ in changes if t >= closed and open_ == 1)
        result[name] = (opened - signalled, opened - closed)
    processes[holder].start()  # back, as the standby
    wait_for(lambda: query(url, "SELECT count(*) FROM collector_processes WHERE expires_at > now()")[0][0] == 2
             and holders(url) == dict.fromkeys(SOURCES, standby), 60, f"{holder} back as the standby")
    time.sleep(1)  # a little steady collection between handovers
    return result


def _reopened(changes: list[tuple[float, int]]) -> bool:
    """After the old connection closed (open 0), a new one opened (open 1)."""
    closed = next((i for i, (_, open_) in enumerate(changes) if open_ == 0), None)
    return closed is not None and any(open_ == 1 for _, open_ in changes[closed + 1:])


def figures(takeovers: list[dict[str, tuple[float, float]]]) -> dict[str, dict[str, float]]:
    out = {}
    for source in SOURCES:
        take = [t[source][0] for t in takeovers]
        gap = [t[source][1] for t in takeovers]
        out[source] = {"takeover_median_s": statistics.median(take), "takeover_max_s": max(take),
                       "not_listening_median_s": statistics.median(gap), "not_listening_max_s": max(gap)}
    return out


def losses(url: str, vendors: FleetThread, handovers: int) -> dict[str, dict[str, float]]:
    sent = vendors.fleet.sent()
    stored = dict(query(url, "SELECT source, count(*) FROM raw_messages WHERE kind !~ '^(snapshot|backfill):'"
                             " GROUP BY source"))
    saba_sent = {i for ids in vendors.fleet.simulators["saba"].sent.values() for i in ids}
    saba_ids = [r[0] for r in query(url, "SELECT event_id FROM raw_messages WHERE source = 'saba'")]
    out = {}
    for source in SOURCES:
        if source == "saba":
            lost, twice = len(saba_sent - set(saba_ids)), len(saba_ids) - len(set(saba_ids))
            total = len(saba_sent)
        else:
            lost, twice, total = sent[source] - stored.get(source, 0), 0, sent[source]
        out[source] = {"sent": total, "lost": lost, "lost_per_handover": lost / max(handovers, 1),
                       "stored_twice": twice}
    return out


def firehose(baseline: str) -> dict[str, Any]:
    """bench/firehose.py against `baseline`, for OddsPapi and Saba: this revision's frames/s over REV's."""
    results = {}
    for feed in ("oddspapi", "saba"):
        say(f"firehose: {feed}, against {baseline} …")
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "firehose.py"), "--feed", feed, "--baseline",
                              baseline, "--repeat", "3", "--frames", "200000", "--rate", "0", "--json"],
                             capture_output=True, text=True,
                             check=True)
        results[feed] = json.loads(out.stdout)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILL handovers (default 20)")
    parser.add_argument("--stops", type=int, default=20, help="clean-stop (SIGTERM) handovers (default 20)")
    parser.add_argument("--ttl", type=float, default=10.0, help="claim_ttl_s of both processes (default 10)")
    parser.add_argument("--firehose", metavar="REV", help="then the firehose with claims against REV (before claims)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args()
    workdir, server = scratch_server("failover")
    url = server.url()
    migrate.upgrade(url)
    report: dict[str, Any] = {"ttl_s": args.ttl, "rates": RATES}
    try:
        with FleetThread(RATES) as vendors:
            processes = {name: CollectorProcess(url, workdir / name, vendors.fleet,
                                                extra=f'\n[collector]\nname = "{name}"\nclaim_ttl_s = {args.ttl}\n')
                         for name in ("a", "b")}
            processes["a"].start()
            wait_for(lambda: holders(url) == dict.fromkeys(SOURCES, "a"), 60, "a holding every feed")
            processes["b"].start()
            runs: dict[str, list[dict[str, tuple[float, float]]]] = {"kill": [], "stop": []}
            for kind, how, count in (("kill", signal.SIGKILL, args.kills), ("stop", signal.SIGTERM, args.stops)):
                for n in range(count):
                    runs[kind].append(handover(url, vendors, processes, how))
                    say(f"{kind} {n + 1}/{count}: takeover {max(t for t, _ in runs[kind][-1].values()):.2f} s")
            vendors.stop_sending()
            wait_for(lambda: query(url, "SELECT count(*) FROM raw_messages WHERE source = 'saba'")[0][0] >= len(
                {i for ids in vendors.fleet.simulators["saba"].sent.values() for i in ids}), 60, "saba stored")
            for process in processes.values():
                process.signal(signal.SIGTERM)
            report["most_connections_of_a_feed_at_once"] = {
                name: member.simulator.streams.most for name, member in vendors.fleet.members.items()}
            report["after_sigkill"] = figures(runs["kill"]) if runs["kill"] else {}
            report["after_clean_stop"] = figures(runs["stop"]) if runs["stop"] else {}
            report["frames"] = losses(url, vendors, args.kills + args.stops)
    finally:
        discard(workdir, server)
    if args.firehose:
        report["firehose"] = firehose(args.firehose)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.kills} SIGKILLs and {args.stops} clean stops, claim_ttl_s = {args.ttl:g}; vendors at {RATES}")
    print(f"{'feed':10} {'kill: takeover med/max':>24} {'not listening med/max':>23} {'stop: takeover med/max':>24}"
          f" {'not listening med/max':>23} {'lost/handover':>14} {'twice':>6}")
    for source in SOURCES:
        k, s, f = report["after_sigkill"].get(source), report["after_clean_stop"].get(source), report["frames"][source]

        def pair(d: dict[str, float] | None, key: str) -> str:
            return f"{d[key + '_median_s']:.2f} / {d[key + '_max_s']:.2f} s" if d else "–"

        print(f"{source:10} {pair(k, 'takeover'):>24} {pair(k, 'not_listening'):>23} {pair(s, 'takeover'):>24}"
              f" {pair(s, 'not_listening'):>23} {f['lost_per_handover']:>14.2f} {f['stored_twice']:>6}")
    print(f"most connections of one feed at once, at the vendor: {report['most_connections_of_a_feed_at_once']}")
    if args.firehose:
        print(json.dumps(report["firehose"], indent=2))


if __name__ == "__main__":
    main()
