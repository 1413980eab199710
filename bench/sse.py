"""SSE reading benchmark: one long event (8 MiB) in 16 KiB and 64 KiB chunks, before and after, in one run.

    python bench/sse.py                                  # 8 MiB; 16 KiB and 64 KiB chunks; 375292f vs this checkout
    python bench/sse.py --mib 4 --chunks 16384 --baseline main

"Before" is the SSE code of `--baseline`, a git revision (default 375292f: the last with the
decoder of our own), taken with `git archive` into a temporary directory; "after" is this checkout.
Each side runs in a process of its own with its `warehouse` first on the path, and measures:
- decoder: the event's bytes, in chunks of the given size, through what the SSE session does with
  them (before: incremental UTF-8 decoding and EventStreamDecoder.feed; after: EventStream, the byte
  framing under httpx-sse) — CPU seconds until the event is out;
- transport: the same event served over HTTP by a server process of its own, written in chunks of
  that size (the kernel may merge or split them), read by that side's SseSession — CPU seconds of
  the reading process until recv() returns the frame;
- small events: 20,000 Saba-sized events (~600 bytes), one chunk each, through the decoder — events/s;
  streamed: the same events in 64 KiB chunks (a busy stream: many events a read) — events/s.
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import inspect
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
SMALL_EVENTS = 20_000


def long_event(mib: int) -> tuple[bytes, bytes]:
    """(data, wire) of one status-1 event of `mib` MiB of JSON: many markets, as a full snapshot has."""
    market = {"marketId": 0, "eventId": 38255274, "betType": 1, "marketStatus": "running", "isLive": True,
              "selections": [{"key": "h", "keyName": "Home", "point": 0.5,
                              "oddsPrice": {"decimalPrice": 1.95, "malayPrice": 0.95}}]}
    one = len(orjson.dumps(market)) + 1
    markets = [{**market, "marketId": 274175476 + i} for i in range((mib << 20) // one)]
    data = orjson.dumps({"status": 1, "message": "InitialData", "payload": {
        "events": {"add": [], "change": [], "remove": []}, "markets": {"add": markets, "change": [], "remove": []}}})
    return data, b"id: 81723\r\ndata: " + data + b"\r\n\r\n"


def small_events() -> list[bytes]:
    change = orjson.dumps({"status": 0, "message": "Success", "payload": {
        "events": {"add": [], "change": [], "remove": []},
        "markets": {"add": [], "change": [{"marketId": 274175476, "eventId": 38255274, "betType": 5, "isLive": True,
                                           "marketStatus": "running", "sort": 1, "selections": [
                                               {"key": k, "point": None, "oddsPrice": {
                                                   "parlayPrice": 1.95, "malayPrice": 0.95, "hongKongPrice": 0.95,
                                                   "decimalPrice": 1.95, "indoPrice": -1.053, "americanPrice": -105}}
                                               for k in ("1", "x", "2")]}], "remove": []}}})
    return [b"id: %d\r\ndata: %s\r\n\r\n" % (81724 + i, change) for i in range(SMALL_EVENTS)]


# -- one side, in its own process ------------------------------------------------------------------


async def _chunks(wire: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(wire), size):
        yield wire[start:start + size]


async def decode(pieces: list[bytes], events: int, limit: int) -> list[str]:
    """What the SSE session of this side does with the body's bytes, until `events` events are out."""
    from warehouse.collect import sse

    if hasattr(sse, "EventStream"):
        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        stream = sse.EventStream(body(), max_data_bytes=limit)
        return [(await stream.next()).data for _ in range(events)]
    text, decoder = codecs.getincrementaldecoder("utf-8")("replace"), sse.EventStreamDecoder()
    out = [item.data for piece in pieces for item in decoder.feed(text.decode(piece)) if isinstance(item, sse.Event)]
    assert len(out) == events
    return out


async def through_transport(port: int, limit: int) -> bytes:
    from warehouse.collect.transports import Frame, SseSession

    options: dict[str, Any] = {"connect_timeout": 10}
    if "max_event_bytes" in inspect.signature(SseSession).parameters:
        options["max_event_bytes"] = limit
    session = SseSession(**options)
    try:
        await session.open(f"http://127.0.0.1:{port}/stream", {"Accept": "text/event-stream"})
        while not isinstance(frame := await session.recv(), Frame):
            pass  # before: a keep-alive marker
        return frame.data
    finally:
        await session.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    data, wire = long_event(args.mib)
    limit = 2 * len(wire)
    results: dict[str, Any] = {"event_bytes": len(data)}
    for size in args.chunks:
        pieces = [wire[i:i + size] for i in range(0, len(wire), size)]
        started = time.process_time()
        (decoded,) = asyncio.run(decode(pieces, 1, limit))
        results[f"decoder {size}"] = time.process_time() - started
        assert decoded.encode() == data
        server = subprocess.Popen([sys.executable, __file__, "--serve", "--mib", str(args.mib), "--chunk", str(size)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())  # type: ignore[union-attr]
            started = time.process_time()
            received = asyncio.run(through_transport(port, limit))
            results[f"transport {size}"] = time.process_time() - started
            assert received == data
        finally:
            server.kill()
            server.wait()
    small = small_events()
    started = time.process_time()
    asyncio.run(decode(small, len(small), limit))
    results["small events/s"] = len(small) / (time.process_time() - started)
    stream = b"".join(small)  # a busy stream: many events a read, as the collector gets them
    chunks = [stream[i:i + 65536] for i in range(0, len(stream), 65536)]
    started = time.process_time()
    asyncio.run(decode(chunks, len(small), limit))
    results["streamed events/s"] = len(small) / (time.process_time() - started)
    return results


def serve(args: argparse.Namespace) -> None:
    """Answer one GET with the long event, written `--chunk` bytes at a time, then keep the connection open."""
    _, wire = long_event(args.mib)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()).strip():
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
        for start in range(0, len(wire), args.chunk):
            writer.write(wire[start:start + args.chunk])
            await writer.drain()
        await asyncio.sleep(3600)

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())


# -- both sides ------------------------------------------------------------------------------------


def run_side(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--measure", "--mib", str(args.mib),
               "--chunks", ",".join(map(str, args.chunks))]
    done = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return orjson.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=8, help="size of the long event (default 8)")
    parser.add_argument("--chunks", type=lambda text: [int(c) for c in text.split(",")], default=[16384, 65536],
                        help="chunk sizes in bytes, comma-separated (default 16384,65536)")
    parser.add_argument("--baseline", default="375292f", help="git revision measured as 'before' (default 375292f)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=16384, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.measure:
        print(orjson.dumps(measure(args)).decode())
        return
    with tempfile.TemporaryDirectory(prefix="owh-bench-sse-") as before:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "warehouse"], check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(before, filter="data")
        sides = {f"before ({args.baseline})": run_side(Path(before), args),
                 "after (this checkout)": run_side(ROOT, args)}
    (first, old), (second, new) = sides.items()
    print(f"one event of {old['event_bytes']:,} bytes of data (CPU seconds; small events: events/s)")
    print(f"{'':24}{first:>22}{second:>24}{'ratio':>10}")
    for key in old:
        if key != "event_bytes":
            ratio = old[key] / new[key] if "/s" not in key else new[key] / old[key]
            print(f"{key:24}{old[key]:>22.3f}{new[key]:>24.3f}{ratio:>9.1f}×")


if __name__ == "__main__":
    main()
