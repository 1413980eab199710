"""Replay benchmark: `replay --check` from Parquet and from PostgreSQL, `replay --into`, and the writer
alone on the same rows (the baseline of `--into`), all in one run.

    python bench/replay.py                    # 200,000 frames, each measurement 3 times
    python bench/replay.py --frames 50000 --repeat 1
    python bench/replay.py --frames 100000 --repeat 1 --check-only --stages   # where a check's CPU goes

The data: OddsPapi frames of two prices each (the simulator's market model, as bench/collect.py
renders them), derived by the OddsPapi adapter and written through the writer into a scratch
database over a few connections, as a collector would have stored them — that write, timed, is
the writer-alone figure — then exported to Parquet. `--into` writes into a fresh database each
time. Prints frames/s (wall), the CPU each process spent per frame, the replay's phases, and the
ratios the goals name: check from Parquet ≥ 50,000 frames/s; `--into` ≥ 0.8 × the writer alone.
`--stages`: the CPU µs a frame of each stage of a check in one process (reading, the loop and
derive(), records → Arrow, the DuckDB inserts, the comparison), run one after another.
Not a test: figures depend on the machine, and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import resource
import shutil
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from bench.collect import KEY, CpuClock, fresh_database  # noqa: E402
from warehouse.collect import gc_settle  # noqa: E402
from warehouse.config import WriterSettings  # noqa: E402
from warehouse.feeds.derive import derive  # noqa: E402
from warehouse.feeds.oddspapi import FEED  # noqa: E402
from warehouse.lake import EXPORT_TABLES  # noqa: E402
from warehouse.lifecycle.export import export_all  # noqa: E402
from warehouse.lifecycle.pending import pending  # noqa: E402
from warehouse.records import CollectorEvent, RawMessage, Record  # noqa: E402
from warehouse.replay import compare, derivation, rebuild, shards  # noqa: E402
from warehouse.replay.stored import FromParquet, FromPostgres, Stored  # noqa: E402
from warehouse.simulate.oddspapi import OddsPapiSimulator  # noqa: E402
from warehouse.store import migrate  # noqa: E402
from warehouse.store.embedded import EmbeddedPostgres  # noqa: E402
from warehouse.store.writer import Writer  # noqa: E402

TEMPLATE = "owh_bench_template"
SOURCE = "oddspapi"
Unit = tuple[RawMessage | None, list[Record]]


def units(frames: int, connections: int) -> list[Unit]:
    """What a collector would have put: per connection a connect event, its frames with their rows, a disconnect."""
    generate = OddsPapiSimulator(KEY, outcomes_per_frame=2)._frames()
    at = datetime.now(UTC) - timedelta(seconds=frames // 5000 + 60)  # about 5,000 frames/s, ending a minute ago
    options = {"url": "ws://127.0.0.1/v4/ws", "api_key_env": "BENCH_KEY"}
    out: list[Unit] = []
    for _ in range(connections):
        connection, adapter = uuid4(), FEED.adapter(SOURCE, None)
        out.append((None, [CollectorEvent(at, SOURCE, connection, "connect", {
            "feed_kind": FEED.kind, "adapter_version": FEED.version, "options": options})]))
        for seq in range(1, frames // connections + 1):
            at += timedelta(microseconds=200)
            done = derive(adapter, FEED.kind, next(generate), received_at=at, source=SOURCE, connection_id=connection,
                          seq=seq, event_id=None, max_frame_bytes=1 << 20)
            out.append((done.raw, done.records))
        out.append((None, [CollectorEvent(at, SOURCE, connection, "disconnect", {"reason": "bench"})]))
    return out


def writer_alone(server: EmbeddedPostgres, workdir: Path, prepared: list[Unit], url: str) -> dict[str, float]:
    """Write the prepared units through the writer into a fresh database: the baseline (and the source)."""

    async def main() -> dict[str, float]:
        cpu = CpuClock(server, replay=[os.getpid()])
        before = cpu.read()
        started = time.perf_counter()
        # A spool of each run's own: a spool belongs to one database, and a fresh database each run
        # would otherwise find the last one's and spool everything instead of writing it.
        spool = workdir / f"spool-writer-{uuid4().hex[:8]}"
        async with Writer(url, WriterSettings(spool_dir=spool)) as writer:
            for raw, rows in prepared:
                await writer.put(raw, rows)
            await writer.flush()
            elapsed = time.perf_counter() - started
            spent = cpu.read()
        return figures(sum(1 for raw, _ in prepared if raw is not None), elapsed, before, spent)

    gc_settle.settle()
    return asyncio.run(main())


def figures(frames: int, elapsed: float, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {"frames_per_s": frames / elapsed, "seconds": elapsed,
            **{f"{name}_us": 1e6 * (after[name] - before[name]) / frames for name in after}}


class Phases:
    """Wall time of the replay's steps (bench only: wraps the functions that do them)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def __enter__(self) -> Phases:
        # Only the work done in this process is timed: with several processes, the deriving ones
        # do these steps themselves (their time is in "the rest").
        self.wrap(compare._Comparison, "add_derived", "rows derived → Arrow → DuckDB")
        self.wrap(compare._Comparison, "load_stored", "stored rows → DuckDB (in a thread, beside deriving)")
        self.wrap(compare._Comparison, "settle_stored", "old control events matched, carried frames left out")
        self.wrap(compare._Comparison, "compare", "comparison: (raw_id, row hash) join, EXCEPT ALL of what differs")
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()


def timed_check(server: EmbeddedPostgres, stored: Stored, frames: int, processes: int | None = None
                ) -> dict[str, float]:
    cpu = CpuClock(server, replay=[os.getpid()])
    before, workers = cpu.read(), _reaped()
    with Phases() as phases:
        started = time.perf_counter()
        report = compare.check(stored, SOURCE, processes=processes)
        elapsed = time.perf_counter() - started
    spent = cpu.read()
    spent["replay"] += _reaped() - workers  # the deriving processes, reaped at the end of the check
    if not report.clean or report.frames != frames:
        raise SystemExit(f"the check is not clean or saw {report.frames} frames, not {frames}: {report.tables}")
    result = figures(frames, elapsed, before, spent)
    result |= {f"phase: {label}": seconds for label, seconds in phases.seconds.items()}
    result["phase: frames read and derived (the rest)"] = elapsed - sum(
        seconds for label, seconds in phases.seconds.items() if "in a thread" not in label)
    return result


def _reaped() -> float:
    """CPU seconds of this process's children that have ended (replay's deriving processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_into(server: EmbeddedPostgres, stored: Stored, frames: int, batch_rows: int | None = None,
               processes: int | None = None) -> dict[str, float]:
    target = fresh_database(server)  # before the clocks start: creating it is not the replay's work
    migrate.require_current(target)
    cpu = CpuClock(server, replay=[os.getpid()])
    before, workers = cpu.read(), _reaped()
    started = time.perf_counter()
    settings = WriterSettings(batch_rows=batch_rows) if batch_rows else None
    # (`processes` is newer than some commits a baseline may run)
    report = rebuild.into(stored, target, SOURCE, writer_settings=settings,
                          **({} if processes is None else {"processes": processes}))
    elapsed = time.perf_counter() - started
    spent = cpu.read()
    spent["replay"] += _reaped() - workers  # a deriving process, reaped at the end
    if report.frames != frames:
        raise SystemExit(f"--into wrote {report.frames} frames, not {frames}")
    return figures(frames, elapsed, before, spent)


def derive_alone(prepared_frames: list[bytes]) -> float:
    """The adapter path by itself on this machine now (derive, one connection): what the rest adds to."""
    adapter, connection, at = FEED.adapter(SOURCE, None), uuid4(), datetime.now(UTC)
    with derivation.quiet_gc():  # as replay derives
        started = time.perf_counter()
        for seq, data in enumerate(prepared_frames, 1):
            derive(adapter, FEED.kind, data, received_at=at, source=SOURCE, connection_id=connection, seq=seq,
                   event_id=None, max_frame_bytes=derivation.NO_LIMIT)
        return len(prepared_frames) / (time.perf_counter() - started)


class CachedDerive:
    """derive() replaced by what it returned before (bench only, `--ceiling`): what the rest of the
    pipeline costs, i.e. what replay would do with a derive() that cost nothing."""

    def __init__(self) -> None:
        self.cache: dict[tuple[Any, int], Any] = {}
        self.original = derivation.derive

    def record(self, *args: Any, **kwargs: Any) -> Any:
        done = self.original(*args, **kwargs)
        self.cache[kwargs["connection_id"], kwargs["seq"]] = done
        return done

    def lookup(self, *args: Any, **kwargs: Any) -> Any:
        return self.cache[kwargs["connection_id"], kwargs["seq"]]

    def runs(self, server: EmbeddedPostgres, stored: Stored, frames: int) -> dict[str, dict[str, float]]:
        derivation.derive = self.record  # type: ignore[assignment]
        try:
            compare.check(stored, SOURCE, processes=1)
            derivation.derive = self.lookup  # type: ignore[assignment]
            return {"--check from Parquet, derive() cached (ceiling of the rest)": timed_check(server, stored, frames),
                    "--check from Parquet, one process, derive() cached": timed_check(server, stored, frames, 1)}
        finally:
            derivation.derive = self.original  # type: ignore[assignment]


def stages(stored: Stored, frames: int) -> dict[str, float]:
    """CPU µs a frame of each stage of `--check`, one process, the stages run one after another on
    the whole range (no thread beside, no flushing in chunks): where a check's CPU goes."""
    import tempfile

    from warehouse.replay import rows
    from warehouse.replay.stored import resolve_range

    start, end = resolve_range(stored, SOURCE, None, None)
    plan = derivation.load_plan(stored, SOURCE, end, None)
    spent: defaultdict[str, float] = defaultdict(float)

    def timed(label: str, work: Callable[..., Any], *args: Any) -> Any:
        started = time.process_time()
        try:
            return work(*args)
        finally:
            spent[label] += time.process_time() - started

    spill = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        with derivation.quiet_gc(), compare._Comparison(spill) as comparison:
            for low, high in derivation.days(start, end):
                batches = timed("reading frames (DuckDB → Arrow, sorted)", _read_frames, stored, low, high)
                keys = [batch.select(shards.KEYS) for batch in batches]
                gathered = rows.RowsByTable()
                timed("the loop and derive()", _gather, derivation.Deriver(stored, plan), batches, gathered)
                tables, kinds, same = timed("records → Arrow", gathered.tables)
                timed("derived rows → DuckDB", comparison.add_derived, tables, kinds, same)
                timed("stored rows → DuckDB", comparison.load_stored, stored, SOURCE, low, high)
                timed("old control events, carried frames", comparison.settle_stored, stored, SOURCE, low, high,
                      keys, [])
                part = compare.Part()
                timed("comparison", comparison.compare, part)
                if not all(tally.clean for tally in part.tallies.values()):
                    raise SystemExit(f"the staged check is not clean: {part.tallies}")
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    result = {label: 1e6 * seconds / frames for label, seconds in spent.items()}
    result["whole, stage by stage"] = sum(result.values())
    return result


def _read_frames(stored: Stored, low: datetime, high: datetime) -> list[Any]:
    return list(stored.frames(SOURCE, low, high))


def _gather(deriver: derivation.Deriver, batches: list[Any], gathered: Any) -> None:
    for replayed in deriver.run(iter(batches)):
        gathered.add(replayed.raw_id, replayed.raw.kind, replayed.stored_kind, replayed.records)


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (medians are printed)")
    parser.add_argument("--into-batch-rows", type=int, default=0,
                        help="also --into with the writer committing this many rows at a time (default: 10,000)")
    parser.add_argument("--check-only", action="store_true",
                        help="only the writer alone and --check from Parquet (no PostgreSQL check, no --into)")
    parser.add_argument("--stages", action="store_true",
                        help="also the CPU a frame of each stage of --check, one process, run one after another")
    parser.add_argument("--ceiling", action="store_true",
                        help="also --check with derive() replaced by its cached results: the rest's ceiling")
    args = parser.parse_args()
    workdir, server = scratch_server("replay")
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    try:
        migrate.upgrade(create_database(server.url("postgres"), TEMPLATE))
        print(f"deriving {args.frames:,} OddsPapi frames …", file=sys.stderr)
        prepared = units(args.frames, args.connections)
        frames = sum(1 for raw, _ in prepared if raw is not None)
        rows = sum(len(r) for raw, r in prepared if raw is not None)
        raw_frames = [raw.payload for raw, _ in prepared if raw is not None and raw.payload is not None]
        print("writer alone (warm-up, and the source) …", file=sys.stderr)
        source = create_database(server.url("postgres"), "owh_bench_source", TEMPLATE)
        writer_alone(server, workdir, prepared, source)
        print("exporting to Parquet …", file=sys.stderr)
        export = workdir / "export"
        export_all(source, export, pending(source, EXPORT_TABLES, redo=True, today_too=True))
        parquet, postgres = FromParquet(export), FromPostgres(source)
        for run in range(1, args.repeat + 1):
            print(f"run {run}: writer alone …", file=sys.stderr)
            runs["writer alone, same rows"].append(writer_alone(server, workdir, prepared, fresh_database(server)))
            print(f"run {run}: derive alone, --check from Parquet, from PostgreSQL, --into …", file=sys.stderr)
            runs["derive() alone (no reading, no comparing)"].append(
                {"frames_per_s": derive_alone(raw_frames[:50_000])})
            runs["--check from Parquet"].append(timed_check(server, parquet, frames))
            runs["--check from Parquet, one process"].append(timed_check(server, parquet, frames, 1))
            if not args.check_only:
                runs["--check from PostgreSQL"].append(timed_check(server, postgres, frames))
                runs["--into from PostgreSQL"].append(timed_into(server, postgres, frames))
                runs["--into from Parquet"].append(timed_into(server, parquet, frames))
            if not args.check_only and "processes" in inspect.signature(rebuild.into).parameters:
                runs["--into from Parquet, deriving in the writer's process"].append(
                    timed_into(server, parquet, frames, processes=1))
                runs["--into from Parquet, deriving in a process of its own"].append(
                    timed_into(server, parquet, frames, processes=2))
            if args.stages:
                runs["stages"].append(stages(parquet, frames))
            if args.ceiling:
                for name, figures_ in CachedDerive().runs(server, parquet, frames).items():
                    runs[name].append(figures_)
            if args.into_batch_rows and not args.check_only:
                runs[f"--into from Parquet, batches of {args.into_batch_rows:,} rows"].append(
                    timed_into(server, parquet, frames, args.into_batch_rows))
    finally:
        discard(workdir, server)
    result = {name: median(r) for name, r in runs.items()}
    print(f"\n{frames:,} OddsPapi frames ({rows:,} derived rows) over {args.connections} connections;"
          f" medians of {args.repeat} run{'s' if args.repeat > 1 else ''}\n")
    print("| run | frames/s | seconds | CPU µs/frame: replay (or writer) process | PostgreSQL |")
    print("|---|---:|---:|---:|---:|")
    for name, r in result.items():
        if name == "stages":
            continue
        cells = [f"{r['frames_per_s']:,.0f}", f"{r['seconds']:.1f}" if "seconds" in r else "–",
                 f"{r['replay_us']:.0f}" if "replay_us" in r else "–",
                 f"{r['postgres_us']:.0f}" if "postgres_us" in r else "–"]
        print(f"| {name} | {' | '.join(cells)} |")
    writer = result["writer alone, same rows"]["frames_per_s"]
    check = result["--check from Parquet"]["frames_per_s"]
    alone = result["derive() alone (no reading, no comparing)"]["frames_per_s"]
    print(f"\n--check from Parquet: {check:,.0f} frames/s (goal 50,000: {'met' if check >= 50_000 else 'not met'});"
          f" {check / alone:.2f} × derive() alone, which is the ceiling of one process deriving"
          f" ({shards.processes_for(None)} derive here, the connections shared out)")
    for name in ("--check from Parquet", "--check from Parquet, one process"):
        ratio = result[name]["frames_per_s"] / writer
        print(f"{name}: {ratio:.2f} × the writer alone (goal 2.5: {'met' if ratio >= 2.5 else 'not met'})")
    for name in ("--into from PostgreSQL", "--into from Parquet"):
        if name not in result:
            continue
        ratio = result[name]["frames_per_s"] / writer
        print(f"{name}: {ratio:.2f} × the writer alone (goal 0.8: {'met' if ratio >= 0.8 else 'not met'})")
    if "stages" in result:
        print("\nCPU µs a frame of --check from Parquet, one process, stage by stage (median):")
        for label, value in result["stages"].items():
            print(f"  {label}: {value:.2f}")
    for name in ("--check from Parquet", "--check from Parquet, one process", "--check from PostgreSQL"):
        if name not in result:
            continue
        print(f"\nwhere the time of {name} goes (seconds, median):")
        for key, value in result[name].items():
            if key.startswith("phase: "):
                print(f"  {key.removeprefix('phase: ')}: {value:.2f}")


if __name__ == "__main__":
    main()
