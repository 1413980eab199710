"""Frame decoding benchmark: what exact numbers cost per frame, before and after, in one run.

    python bench/decode.py                      # 042a4d6 (orjson, numbers through doubles) vs this checkout
    python bench/decode.py --baseline main --frames 50000 --rounds 5

"Before" is the code of `--baseline`, a git revision, taken with `git archive` into a temporary
directory; "after" is this checkout. Each side runs in a process of its own with its `warehouse`
first on the path, the sides alternating `--rounds` times (the best pass of each side is kept: the
machine's noise only ever adds). Both sides get the same frames, made here:
- oddspapi two prices: the simulator's price frames of two outcomes each (what bench/replay.py and
  the collector's budget of issue 28 are about: ~16 µs a frame in all);
- oddspapi, 28-digit stakes: the same frames with `"limit": 1234567890.123456789012345678` in each
  price, so every frame takes the decoder's exact path twice (before: rounded to a double);
- saba market deltas: bench/firehose.py's Saba frames (a market change of three prices each, after the
  status-1 snapshot);
- golden <kind>: every frame of the kind's golden fixtures (tests/fixtures/<kind>/), in order, through
  one adapter per fixture.
Per frame, in µs of CPU: `decode`, the JSON text → Python values alone (before: orjson.loads; after:
warehouse.exactjson.loads); `derive`, the whole of warehouse.feeds.derive.derive (decode, adapter,
records); `jsonb`, the writer's encoding of the records' jsonb values (attrs, payload, ...); and
`canonical`, replay --check's canonical text of them, from the values and from their stored text.
Not a test: figures depend on the machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "bench"
WIDE_LIMIT = b'"limit":1234567890.123456789012345678'


def frame_sets(frames: int) -> dict[str, list[tuple[str, dict[str, Any], list[str]]]]:
    """name → [(feed kind, adapter options, frames as text)]: one adapter per entry."""
    sys.path.insert(0, str(ROOT))
    from tests import golden
    from warehouse import exactjson
    from warehouse.feeds.registry import FEEDS
    from warehouse.simulate.oddspapi import OddsPapiSimulator

    generate = OddsPapiSimulator("k" * 32, outcomes_per_frame=2)._frames()
    prices: list[bytes] = []
    while len(prices) < frames:
        frame = next(generate)
        if frame.count(b'"price"') == 2:
            prices.append(frame)
    oddspapi = {"url": "wss://example.invalid/v4/ws", "api_key_env": "KEY"}
    sets = {
        "oddspapi two prices": [("oddspapi-ws", oddspapi, [f.decode() for f in prices])],
        "oddspapi, 28-digit stakes": [("oddspapi-ws", oddspapi,
                                       [f.replace(b'"limit":null', WIDE_LIMIT).decode() for f in prices])],
    }
    # Saba's busiest frame, as bench/firehose.py's peer sends it: a market and its three prices, after the
    # snapshot that tells each market's event.
    from bench._peer import saba_frames, saba_snapshot

    rng, start = random.Random(7), datetime(2026, 12, 6, 12, tzinfo=UTC)
    deltas = saba_frames(rng, start)
    saba = [saba_snapshot(rng, start), *(next(deltas) for _ in range(frames))]
    sets["saba market deltas"] = [("saba-sse", {"url": "https://example.invalid/sports/stream/v1/GetEvents",
                                                "token_env": "TOKEN"}, [f.decode() for f in saba])]
    for kind in FEEDS:
        entries = []
        for path in golden.files(kind):
            fixture = golden.load(path)
            texts = [FEEDS[kind].decode(step["text"].encode(), 1 << 20) if "text" in step
                     else exactjson.dumps(step["frame"]) for step in fixture["frames"]]
            entries.append((kind, fixture.get("options", {}), [t.decode() for t in texts]))
        sets[f"golden {kind}"] = entries * max(1, frames // max(1, sum(len(e[2]) for e in entries)) // 4)
    return sets


# -- one side ----------------------------------------------------------------------------------------


def measure(path: Path, repeat: int) -> dict[str, dict[str, float]]:
    """Best µs per frame of each set, decoding alone and the whole derive (run in a side's process)."""
    sys.path.append(str(ROOT))  # tests.feedkit: this checkout's, after the side's warehouse
    from tests.feedkit import options as make_options
    from warehouse.feeds.derive import derive
    from warehouse.feeds.registry import FEEDS
    from warehouse.replay.rows import canonical_json, canonical_stored_json
    from warehouse.store.connection import encode_jsonb

    try:
        from warehouse.exactjson import loads
    except ImportError:  # before: every frame went through orjson
        loads = orjson.loads
    sets = orjson.loads(path.read_bytes())
    received_at = datetime(2026, 11, 21, 12, tzinfo=UTC)
    results = {}
    for name, entries in sets.items():
        prepared = [(kind, make_options(kind, **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in values.items()}), [t.encode() for t in texts])
                    for kind, values, texts in entries]
        count = sum(len(texts) for _, _, texts in prepared)
        json = [data for _, _, texts in prepared for data in texts if _decodes(loads, data)]

        def decode_pass(texts: list[bytes] = json) -> None:
            for data in texts:
                loads(data)

        def derive_pass(entries: list[tuple[str, Any, list[bytes]]] = prepared) -> None:
            for kind, options, texts in entries:
                adapter = FEEDS[kind].adapter(SOURCE, options)
                connection = uuid4()
                for seq, data in enumerate(texts, 1):
                    derive(adapter, kind, data, received_at=received_at, source=SOURCE, connection_id=connection,
                           seq=seq, event_id=None, max_frame_bytes=1 << 20)

        values = [value for _, options, texts in prepared for value in _jsonb_values(FEEDS, derive, options, texts)]
        stored = [encode_jsonb(value)[1:].decode() for value in values]

        def jsonb_pass(items: list[Any] = values) -> None:
            for value in items:
                encode_jsonb(value)

        def canonical_pass(items: list[Any] = values, texts: list[str] = stored) -> None:
            for value in items:
                canonical_json(value)
            for text in texts:
                canonical_stored_json(text)

        results[name] = {"frames": count, "decode": best(decode_pass, repeat) / len(json) * 1e6,
                         "derive": best(derive_pass, repeat) / count * 1e6,
                         "jsonb": best(jsonb_pass, repeat) / count * 1e6,
                         "canonical": best(canonical_pass, repeat) / count * 1e6}
    return results


def _jsonb_values(feeds: Any, derive: Any, options: Any, texts: list[bytes]) -> list[Any]:
    """The jsonb values of the records one adapter derives from `texts` (what the writer encodes)."""
    found = []
    kind = next(k for k, feed in feeds.items() if isinstance(options, feed.options))
    adapter = feeds[kind].adapter(SOURCE, options)
    for seq, data in enumerate(texts, 1):
        done = derive(adapter, kind, data, received_at=datetime(2026, 11, 21, 12, tzinfo=UTC), source=SOURCE,
                      connection_id=uuid4(), seq=seq, event_id=None, max_frame_bytes=1 << 20)
        for record in done.records:
            found += [getattr(record, field) for field in ("attrs", "payload", "old", "changes", "detail")
                      if isinstance(getattr(record, field, None), dict | list)]
    return found


def _decodes(loads: Any, data: bytes) -> bool:
    """Whether the frame is JSON (a golden fixture holds some that are not: decoding alone times those that are)."""
    try:
        loads(data)
    except ValueError:
        return False
    return True


def best(run: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()  # CPU time: other processes on the machine do not count
        run()
        times.append(time.process_time() - started)
    return min(times)


# -- both sides ------------------------------------------------------------------------------------


def run_side(tree: Path, frames: Path, repeat: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--measure", str(frames), "--repeat", str(repeat)]
    done = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return orjson.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="042a4d6", help="git revision measured as 'before' (default 042a4d6)")
    parser.add_argument("--frames", type=int, default=20_000, help="frames per set (default 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="times each side runs, alternating (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the frames per run (default 3)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(orjson.dumps(measure(args.measure, args.repeat)).decode())
        return
    with tempfile.TemporaryDirectory(prefix="owh-bench-decode-") as scratch:
        before = Path(scratch) / "before"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "warehouse"], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(before, filter="data")
        frames = Path(scratch) / "frames.json"
        frames.write_bytes(orjson.dumps(frame_sets(args.frames)))
        runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            runs["before"].append(run_side(before, frames, args.repeat))
            runs["after"].append(run_side(ROOT, frames, args.repeat))
    stages = ("frames", "decode", "derive", "jsonb", "canonical")
    old, new = ({name: {stage: min(run[name][stage] for run in side) for stage in stages}
                 for name in side[0]} for side in (runs["before"], runs["after"]))
    print(f"µs per frame, best of {args.rounds} runs × {args.repeat} passes; before = {args.baseline}, after = this"
          " checkout")
    print("| frames | n | decode | derive | jsonb | canonical |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in old:
        a, b = old[name], new[name]
        cells = " | ".join(f"{a[s]:.2f} → {b[s]:.2f} ({b[s] / a[s]:.2f}×)" for s in stages[1:])
        print(f"| {name} | {int(a['frames']):,} | {cells} |")


if __name__ == "__main__":
    main()
