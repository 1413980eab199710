"""Collector benchmark: OddsPapi simulator → collector → PostgreSQL, against the writer-only ceiling.

    python bench/collect.py                      # 5,000 frames/s and firehose, 20 s each, 3 times; ceiling
    python bench/collect.py --outage 60          # ... plus 5,000 frames/s with a 60 s database outage
    python bench/collect.py --schema-cost        # where PostgreSQL's time per frame goes (writer alone)
    python bench/collect.py --split              # two feeds: one collector process, or one per feed

Every OddsPapi frame carries two prices (one raw frame + two price_ticks rows). The simulator runs
in its own process, as a vendor would, and sends frames its market model rendered before the run
(a paced simulator sends the frames due each millisecond together); the collector (the same
FeedRunner and Writer that `warehouse collect` runs) and PostgreSQL share the machine with it.
Prints frames/s, rows/s, p50/p99 receive→commit latency, the collector process's peak RSS
while collecting, and the CPU time each process spent per frame (collector, PostgreSQL server,
simulator): on a machine this small the three compete for the same cores, so this says what a
frame costs and where. Each run is repeated (`--repeat`): this machine is shared and one run
can be 30% off another. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from warehouse.collect import gc_settle  # noqa: E402
from warehouse.collect.runner import FeedRunner  # noqa: E402
from warehouse.collect.settings import feed_settings  # noqa: E402
from warehouse.config import WriterSettings, load_config  # noqa: E402
from warehouse.feeds.oddspapi import Adapter  # noqa: E402
from warehouse.records import RawMessage  # noqa: E402
from warehouse.simulate.oddspapi import OddsPapiSimulator  # noqa: E402
from warehouse.store import migrate  # noqa: E402
from warehouse.store.embedded import EmbeddedPostgres  # noqa: E402
from warehouse.store.writer import Writer  # noqa: E402

KEY = "bench-key"
TEMPLATE = "owh_bench_template"
FRAMES_FILE = "frames.jsonl"


def read_frames(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def render_frames(path: Path, count: int) -> None:
    """The simulator's market model, rendered ahead of time (one frame per line: orjson never
    writes a newline). A vendor renders its frames on its own machines; rendering them during the
    run would spend ~40 µs per frame of the two cores the collector and PostgreSQL share here."""
    frames = OddsPapiSimulator(KEY, outcomes_per_frame=2)._frames()
    with path.open("wb") as out:
        for _ in range(count):
            out.write(next(frames) + b"\n")


def _serve(port: int, rate: float | None, frames_path: Path, ready: Any) -> None:
    async def main() -> None:
        frames = read_frames(frames_path)
        simulator = OddsPapiSimulator(KEY, rate=rate, record=False, script=frames, generate=False)
        await simulator.start("127.0.0.1", port)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def start_simulator(workdir: Path, rate: float | None) -> tuple[multiprocessing.process.BaseProcess, int]:
    """An OddsPapi simulator process sending the pre-rendered frames, listening on its port."""
    port = free_port()
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    process = spawn.Process(target=_serve, args=(port, rate, workdir / FRAMES_FILE, ready), daemon=True)
    process.start()
    if not ready.wait(120):
        raise SystemExit("the simulator process did not start within 120 s")
    return process, port


def feed_toml(name: str, port: int) -> str:
    return (f'[[feeds]]\nname = "{name}"\nkind = "oddspapi-ws"\nurl = "ws://127.0.0.1:{port}/v4/ws"\n'
            'api_key_env = "BENCH_KEY"\nsilence_timeout_s = 600\n')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CpuClock:
    """CPU seconds (user + system) spent so far by the collector, simulator, ... processes named,
    and by the PostgreSQL server (postmaster and its backends): where a frame's cost goes."""

    def __init__(self, server: EmbeddedPostgres, **pids: list[int]) -> None:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        self.processes = {name: [psutil.Process(pid) for pid in group] for name, group in pids.items()}
        self.processes["postgres"] = [psutil.Process(postmaster)]

    def read(self) -> dict[str, float]:
        spent = {}
        for name, group in self.processes.items():
            total = 0.0
            for process in group:
                try:
                    root = process.cpu_times()
                    total += root.user + root.system
                    if name == "postgres":  # its backends: those still running, and those it has reaped
                        total += root.children_user + root.children_system
                        for child in process.children(recursive=True):
                            with contextlib.suppress(psutil.Error):
                                total += sum(child.cpu_times()[:2])
                except psutil.Error:  # the server was restarted (outage run): its time is unknown
                    total = float("nan")
            spent[name] = total
        return spent


class PeakRss:
    """Samples this process's RSS in a thread (the event loop may be too busy to do it)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, me.memory_info().rss)
            time.sleep(0.1)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fresh_database(server: EmbeddedPostgres, alter: tuple[str, ...] = ()) -> str:
    """Every run starts from an empty migrated database, so no run pays for its predecessors'
    rows (autovacuum of the day's partition, a bigger index). `alter` runs on it first."""
    url = create_database(server.url("postgres"), "owh_bench_run", TEMPLATE)
    os.sync()  # and no run pays for writing back the previous one's pages
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in alter:
            conn.execute(statement)
        conn.execute("CHECKPOINT")  # ... or for flushing its buffers
    return url


# What the schema makes PostgreSQL do for each frame, taken away one at a time (`--schema-cost`).
# None of these is an option for the warehouse: they say where the server's time per frame goes.
SCHEMA_WITHOUT = {
    "the raw frame as jsonb (bytea instead)": (
        "ALTER TABLE raw_messages ALTER COLUMN payload TYPE bytea USING convert_to(payload::text, 'UTF8')",),
    "the price_ticks lookup B-tree": ("DROP INDEX price_ticks_fixture_id_market_id_outcome_id_received_at_idx",),
    "the raw_messages lookup B-tree": ("DROP INDEX raw_messages_source_received_at_idx",),
    "the BRIN indexes": ("DROP INDEX raw_messages_received_at_brin", "DROP INDEX raw_messages_id_brin",
                         "DROP INDEX price_ticks_received_at_brin"),
}


async def collect_phase(server: EmbeddedPostgres, workdir: Path, prerendered: int, rate: float | None,
                        seconds: float,
                        outage: tuple[float, float] | None = None,
                        writer: WriterSettings | None = None) -> dict[str, float]:
    """Collect from a fresh simulator process into a fresh database for `seconds`; return the figures."""
    url = fresh_database(server)
    process, port = start_simulator(workdir, rate)
    config = workdir / "bench.toml"
    config.write_text(feed_toml("oddspapi", port))
    feed = feed_settings(load_config(config), {"BENCH_KEY": KEY})[0]
    latencies: list[float] = []

    def on_commit(units: list) -> None:
        now = time.time()
        latencies.extend(now - raw.received_at.timestamp() for raw, _ in units if raw is not None)

    spool = workdir / f"spool-{port}"
    phase_start = datetime.now(UTC)
    with PeakRss() as rss:
        settings = replace(writer or WriterSettings(), spool_dir=spool)
        async with Writer(url, settings, on_commit=on_commit) as writer:
            runner = FeedRunner(feed, writer)
            frames_at_start = runner.metrics.frames  # the source's counters outlive a phase
            gc_settle.settle()  # as `warehouse collect` does
            task = asyncio.create_task(runner.run())
            await asyncio.sleep(1.0)  # connected and streaming
            counters = runner.metrics
            frames_before, rows_before = counters.frames, counters.rows
            cpu = CpuClock(server, collector=[os.getpid()], simulator=[process.pid])
            cpu_before = cpu.read()
            started = time.perf_counter()
            if outage is not None:
                after, length = outage
                await asyncio.sleep(after)
                await asyncio.to_thread(server.stop, "immediate")
                print(f"  database stopped for {length:.0f} s …", file=sys.stderr)
                await asyncio.sleep(length)
                await asyncio.to_thread(server.start)
                await asyncio.sleep(max(0.0, seconds - after - length))
            else:
                await asyncio.sleep(seconds)
            received = counters.frames - frames_before
            derived = counters.rows - rows_before
            elapsed = time.perf_counter() - started
            cpu_spent = {name: spent - cpu_before[name] for name, spent in cpu.read().items()}
            if counters.frames - frames_at_start >= prerendered:
                print("  the pre-rendered frames ran out before the end: raise --frames", file=sys.stderr)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            process.terminate()
            if outage is not None:
                await writer.wait_replayed(600)
    latencies.sort()
    with psycopg.connect(url) as conn:
        # every frame numbered (received) must be stored: sum of the highest seq = count, per phase
        top = conn.execute("SELECT sum(max_seq) FROM (SELECT max(seq) AS max_seq FROM raw_messages"
                           " WHERE received_at >= %s GROUP BY connection_id) c", (phase_start,)).fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM raw_messages WHERE received_at >= %s", (phase_start,)).fetchone()[0]
    return {
        "frames_per_s": received / elapsed,
        "rows_per_s": (received + derived) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "peak_rss_mb": rss.peak / 2**20,
        "received_not_stored": (top or 0) - stored,
        **{f"{name}_us": 1e6 * spent / max(received, 1) for name, spent in cpu_spent.items()},
    }


async def ceiling(server: EmbeddedPostgres, workdir: Path, frames: int,
                  alter: tuple[str, ...] = ()) -> dict[str, float]:
    """The writer alone on the same kind of rows: frames rendered and parsed ahead of time."""
    adapter = Adapter("ceiling")
    connection, units = uuid4(), []
    for seq, data in enumerate(read_frames(workdir / FRAMES_FILE)[:frames]):
        now = datetime.now(UTC)
        units.append((RawMessage(now, "ceiling", connection, seq, "price", data),
                      adapter.handle(orjson.loads(data), now).records))
    url = fresh_database(server, alter)  # before the clocks start: creating it is not the writer's work
    cpu = CpuClock(server, collector=[os.getpid()])
    cpu_before = cpu.read()
    started = time.perf_counter()
    async with Writer(url, WriterSettings(spool_dir=workdir / "spool-ceiling")) as writer:
        for raw, rows in units:
            await writer.put(raw, rows)
        await writer.flush()
        elapsed = time.perf_counter() - started
        spent = cpu.read()  # before the writer's backend exits and takes its CPU time with it
    rows = sum(1 + len(r) for _, r in units)
    return {"frames_per_s": len(units) / elapsed, "rows_per_s": rows / elapsed,
            **{f"{name}_us": 1e6 * (spent - cpu_before[name]) / len(units) for name, spent in spent.items()}}


def split_phase(server: EmbeddedPostgres, workdir: Path, prerendered: int, processes: int,
                seconds: float) -> dict[str, float]:
    """Two OddsPapi feeds in the firehose, each from its own simulator process, collected by
    `warehouse collect` itself: all in one process, or one process per feed (`--feed`)."""
    url = fresh_database(server)
    simulators = [start_simulator(workdir, None) for _ in range(2)]
    names = [f"oddspapi{i}" for i in range(1, len(simulators) + 1)]
    config = workdir / "split.toml"
    config.write_text("".join(feed_toml(name, port) for name, (_, port) in zip(names, simulators, strict=True)))
    env = {**os.environ, "BENCH_KEY": KEY, "WAREHOUSE_DATA_DIR": str(workdir / f"data-{processes}")}
    command = [sys.executable, "-m", "warehouse", "--database-url", url, "--config", str(config), "collect"]
    groups = [[]] if processes == 1 else [[f"--feed={name}"] for name in names]
    logs = [workdir / f"collector-{processes}-{i}.log" for i in range(len(groups))]
    collectors = []
    for group, log in zip(groups, logs, strict=True):
        with log.open("w") as out:
            collectors.append(subprocess.Popen([*command, *group], env=env, stdout=subprocess.DEVNULL, stderr=out))
    try:
        time.sleep(5)  # started, connected, streaming
        cpu = CpuClock(server, collector=[c.pid for c in collectors],
                       simulator=[process.pid for process, _ in simulators])
        cpu_before, window_start = cpu.read(), datetime.now(UTC)
        time.sleep(seconds)
        cpu_spent = {name: spent - cpu_before[name] for name, spent in cpu.read().items()}
        window_end = datetime.now(UTC)
        for collector, log in zip(collectors, logs, strict=True):
            if collector.poll() is not None:
                raise SystemExit(f"a collector process ended early:\n{log.read_text()[-2000:]}")
    finally:
        for collector in collectors:
            collector.terminate()  # SIGTERM: flush, record the disconnect, exit
        for collector in collectors:
            collector.wait(60)
        for process, _ in simulators:
            process.terminate()
    with psycopg.connect(url) as conn:  # counted afterwards: the count is not the collectors' work
        received = conn.execute("SELECT count(*) FROM raw_messages WHERE received_at >= %s AND received_at < %s",
                                (window_start, window_end)).fetchone()[0]
        busiest = conn.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM raw_messages GROUP BY source) s"
                               ).fetchone()[0]
    if busiest >= prerendered:
        print("  the pre-rendered frames ran out before the end: raise --frames", file=sys.stderr)
    elapsed = (window_end - window_start).total_seconds()
    return {"frames_per_s": received / elapsed,
            **{f"{name}_us": 1e6 * spent / max(received, 1) for name, spent in cpu_spent.items()}}


def print_split(runs: dict[str, dict[str, float]]) -> None:
    print("\n| two OddsPapi feeds, firehose | frames/s, both feeds | CPU µs/frame: collectors | postgres"
          " | simulators |")
    print("|---|---:|---:|---:|---:|")
    for name, r in runs.items():
        print(f"| {name} | {r['frames_per_s']:,.0f} | {r['collector_us']:.0f} | {r['postgres_us']:.0f}"
              f" | {r['simulator_us']:.0f} |")


SCHEMA_COST_FRAMES = 100_000


def schema_cost(server: EmbeddedPostgres, workdir: Path, repeat: int) -> dict[str, list[dict[str, float]]]:
    """The ceiling on the full schema and without each part of it, interleaved `repeat` times so
    that the machine's drift falls on every variant alike."""
    variants = {"full schema": (), **{f"without {name}": alter for name, alter in SCHEMA_WITHOUT.items()},
                "without any of these": sum(SCHEMA_WITHOUT.values(), ())}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    asyncio.run(ceiling(server, workdir, SCHEMA_COST_FRAMES))  # warm-up: WAL segments, caches
    for run in range(1, repeat + 1):
        for name, alter in variants.items():
            print(f"{name}, run {run} …", file=sys.stderr)
            runs[name].append(asyncio.run(ceiling(server, workdir, SCHEMA_COST_FRAMES, alter)))
    return runs


def print_schema_cost(runs: dict[str, list[dict[str, float]]]) -> None:
    median = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
              for name, results in runs.items()}
    full = median["full schema"]["postgres_us"]
    print(f"\nwriter alone, {SCHEMA_COST_FRAMES:,} frames, medians of {len(runs['full schema'])} runs\n")
    print("| schema | frames/s | CPU µs/frame: writer | postgres | postgres vs full schema |")
    print("|---|---:|---:|---:|---:|")
    for name, r in median.items():
        print(f"| {name} | {r['frames_per_s']:,.0f} | {r['collector_us']:.1f} | {r['postgres_us']:.1f}"
              f" | {r['postgres_us'] - full:+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="frames/s of the latency run")
    parser.add_argument("--outage", type=float, default=0.0, help="seconds of database outage in an extra run")
    parser.add_argument("--latency-only", action="store_true", help="only the fixed-rate run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind")
    parser.add_argument("--frames", type=int, default=700_000,
                        help="frames the simulator renders ahead of time (enough for the firehose)")
    parser.add_argument("--flush-ms", type=float, default=WriterSettings.flush_interval * 1000,
                        help="writer flush interval")
    parser.add_argument("--split", action="store_true",
                        help="instead: two feeds in one collector process, then in one process each")
    parser.add_argument("--schema-cost", action="store_true",
                        help="instead: the writer-only ceiling with each index, and jsonb, taken away in turn")
    args = parser.parse_args()
    workdir, server = scratch_server("collect")
    migrate.upgrade(create_database(server.url("postgres"), TEMPLATE))
    results: dict[str, dict[str, float]] = {}
    try:
        if args.schema_cost:
            render_frames(workdir / FRAMES_FILE, SCHEMA_COST_FRAMES)
            print_schema_cost(schema_cost(server, workdir, args.repeat))
            return
        if args.split:
            print(f"rendering {args.frames:,} frames …", file=sys.stderr)
            render_frames(workdir / FRAMES_FILE, args.frames)
            split_phase(server, workdir, args.frames, 1, 5)  # warm-up
            runs = {}
            for run in range(1, args.repeat + 1):
                for processes in (1, 2):
                    name = "one process" if processes == 1 else "one process per feed (`--feed`)"
                    print(f"{name}, run {run} …", file=sys.stderr)
                    runs[f"{name} #{run}"] = split_phase(server, workdir, args.frames, processes, args.seconds)
            print_split(runs)
            return
        print(f"rendering {args.frames:,} frames …", file=sys.stderr)
        render_frames(workdir / FRAMES_FILE, args.frames)
        print("warm-up …", file=sys.stderr)
        asyncio.run(collect_phase(server, workdir, args.frames, None, 5))
        writer = WriterSettings(flush_interval_s=args.flush_ms / 1000)
        for run in range(1, args.repeat + 1):
            print(f"{args.rate:.0f} frames/s, run {run} …", file=sys.stderr)
            results[f"{args.rate:.0f}/s #{run}"] = asyncio.run(collect_phase(
                server, workdir, args.frames, args.rate, args.seconds, writer=writer))
            if not args.latency_only:
                print(f"firehose, run {run} …", file=sys.stderr)
                results[f"firehose #{run}"] = asyncio.run(collect_phase(
                    server, workdir, args.frames, None, args.seconds))
        if args.outage:
            print(f"{args.rate:.0f} frames/s with a {args.outage:.0f} s outage …", file=sys.stderr)
            results[f"{args.rate:.0f}/s, {args.outage:.0f} s outage"] = asyncio.run(collect_phase(
                server, workdir, args.frames, args.rate, args.seconds + args.outage + 10, outage=(10, args.outage)))
        ceiling_result = None
        if not args.latency_only:
            print("writer-only ceiling …", file=sys.stderr)
            ceiling_result = asyncio.run(ceiling(server, workdir, 200_000))
    finally:
        discard(workdir, server)
    print("\n| run | frames/s | rows/s | p50 ms | p99 ms | peak RSS MB | received, not stored"
          " | CPU µs/frame: collector | postgres | simulator |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['frames_per_s']:,.0f} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f}"
              f" | {r['peak_rss_mb']:.0f} | {r['received_not_stored']:.0f} | {r['collector_us']:.0f}"
              f" | {r['postgres_us']:.0f} | {r['simulator_us']:.0f} |")
    if ceiling_result:
        r = ceiling_result
        print(f"| writer alone, same rows | {r['frames_per_s']:,.0f} | {r['rows_per_s']:,.0f} | – | – | – | –"
              f" | {r['collector_us']:.0f} | {r['postgres_us']:.0f} | – |")


if __name__ == "__main__":
    main()
