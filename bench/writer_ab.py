"""The writer of this tree against the writer of another revision, alternating, on one server.

    python bench/writer_ab.py --rev 0cdef43                  # this tree vs 0cdef43, 5 rounds
    python bench/writer_ab.py --rev main --ticks 100000 --rounds 3

Each run is a process of its own with one tree first on its path (the other's `git archive`, unpacked
in a temporary folder), putting the same frames (bench/ingest.py's, one by one as a collector does)
through `Writer` into a fresh database copied from one migrated template; the rounds alternate
which tree goes first (ABBA), so drift of a busy machine falls on both. Reported per tree, medians:
wall time and CPU time of the writer's process per frame (CPU is robust to load) from the first put
to the flush that stored the last frame, and apart from it the CPU of the writer's start (connecting)
and close; and the ratios of this tree to the other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import create_database, discard, scratch_server  # noqa: E402
from warehouse.store import migrate  # noqa: E402

# The frames are put one by one as a collector does; timed from the first put to the flush that stores
# the last (the steady state), and apart from it the writer's start (connecting) and close.
CHILD = """
import asyncio, gc, json, sys, time
from pathlib import Path
from bench.ingest import make_units
from warehouse.store.writer import Writer, WriterSettings
import warehouse
assert Path(warehouse.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), warehouse.__file__
units = make_units(int(sys.argv[3]))
gc.collect()
gc.freeze()

async def main():
    times = [(time.perf_counter(), time.process_time())]
    writer = await Writer(sys.argv[2], WriterSettings(spool_dir=Path(sys.argv[4]))).start()
    times.append((time.perf_counter(), time.process_time()))
    for raw, rows in units:
        await writer.put(raw, rows)
    await writer.flush()
    times.append((time.perf_counter(), time.process_time()))
    await writer.close()
    times.append((time.perf_counter(), time.process_time()))
    assert writer.stats.frames == len(units), writer.stats
    (w0, c0), (w1, c1), (w2, c2), (w3, c3) = times
    print(json.dumps({"wall": w2 - w1, "cpu": c2 - c1, "frames": len(units),
                      "start_close_wall": (w1 - w0) + (w3 - w2), "start_close_cpu": (c1 - c0) + (c3 - c2)}))

asyncio.run(main())
"""


def unpack(rev: str, into: Path) -> Path:
    """`git archive` of `rev` (this repository's), unpacked into `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    tar = into / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as unpacked:
        unpacked.extractall(into / "tree", filter="data")
    return into / "tree"


def run(tree: Path, url: str, ticks: int, spool: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), url, str(ticks), str(spool)], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", required=True, help="the other revision (e.g. main, 0cdef43)")
    parser.add_argument("--ticks", type=int, default=200_000, help="price ticks (frames: half as many)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    workdir, server = scratch_server("writer-ab")
    try:
        trees = {"this": ROOT, args.rev: unpack(args.rev, workdir)}
        admin_url = server.url("postgres")
        template = "owh_bench_template"
        migrate.upgrade(create_database(admin_url, template))
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for round_ in range(args.rounds + 1):  # round 0 warms the server's WAL up and is not counted
            order = list(trees) if round_ % 2 else list(reversed(trees))
            for name in order:
                url = create_database(admin_url, "owh_bench_ab", template)
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute("CHECKPOINT")
                result = run(trees[name], url, args.ticks, workdir / f"spool-{round_}-{len(results[name])}")
                print(f"round {round_} {name:>10}: {result['wall']:.2f} s wall, "
                      f"{result['cpu'] / result['frames'] * 1e6:.2f} µs CPU per frame; start and close"
                      f" {result['start_close_cpu'] * 1e3:.1f} ms CPU", file=sys.stderr, flush=True)
                if round_:
                    results[name].append(result)
    finally:
        discard(workdir, server)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] / r["frames"] * 1e6 for r in results[name])

    def start_close(name: str) -> float:
        return statistics.median(r["start_close_cpu"] * 1e3 for r in results[name])

    frames = results["this"][0]["frames"]
    print(f"\n{frames:,.0f} frames ({args.ticks:,} ticks) per run, {args.rounds} rounds alternating, one server\n")
    print("| tree | wall µs/frame | frames/s | CPU µs/frame | start + close, ms CPU |")
    print("|---|---:|---:|---:|---:|")
    for name in trees:
        wall, cpu = median(name, "wall"), median(name, "cpu")
        print(f"| {name} | {wall:.1f} | {1e6 / wall:,.0f} | {cpu:.2f} | {start_close(name):.1f} |")
    print(f"\nthis / {args.rev}: wall {median('this', 'wall') / median(args.rev, 'wall'):.3f},"
          f" CPU {median('this', 'cpu') / median(args.rev, 'cpu'):.3f}")


if __name__ == "__main__":
    main()
