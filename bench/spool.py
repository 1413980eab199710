"""Spool benchmark: the self-describing format (OWS2) against the pickles it replaced (OWS1).

    python bench/spool.py                        # 20 batches of 1,000 OddsPapi frames, two ticks each
    python bench/spool.py --batches 50 --repeat 7

The batch is what a collector spools during a database outage: OddsPapi frames through the real
adapter and warehouse.feeds.derive (one raw frame and two price_ticks rows each, with
their attrs). Measured per format, best of --repeat, in one run:
  encode / decode   the entry codec alone (batch → bytes → batch)
  spool round trip  Spool.append of every batch, then peek/commit_head until empty (fsync off:
                    a disk flush costs the same for either format)
The OWS1 figures use the previous version's writer (the allow-list pickler); reading OWS1 is
what the spool still does for a spool an earlier version left. Not a test: the ratios are what
to compare, and spooling must keep up with ~20,000 frames/s.
"""

from __future__ import annotations

import argparse
import io
import pickle
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from warehouse.feeds.derive import derive  # noqa: E402
from warehouse.feeds.registry import FEEDS  # noqa: E402
from warehouse.store import spool as spool_module  # noqa: E402
from warehouse.store import spoolcodec  # noqa: E402

BOOKMAKERS = ["pinnacle", "bet365", "stake", "22bet", "starcasino.be", "1xbet", "sbobet"]


def oddspapi_units(frames: int, seed: int) -> list[Any]:
    """`frames` OddsPapi price frames (one market, two outcomes) as the collector derives them."""
    rng = random.Random(seed)
    feed = FEEDS["oddspapi-ws"]
    adapter = feed.adapter("oddspapi", feed.options(url="wss://example.invalid/v4/ws", api_key_env="OP_KEY"))
    connection = uuid.uuid4()
    start = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    units = []
    for seq in range(1, frames + 1):
        at = start + timedelta(microseconds=seq * 350)
        changed = (at - timedelta(milliseconds=rng.randrange(50, 400))).isoformat()
        market = rng.choice(("101", "104", "1010", "111"))
        outcomes = {
            str(int(market) + i): {"players": {"0": {
                "active": True, "betslip": None, "bookmakerOutcomeId": str(rng.randrange(10**9)),
                "changedAt": changed, "limit": rng.choice((None, 250.5, 1000)), "playerName": None,
                "price": round(rng.uniform(1.2, 6.0), 3), "exchangeMeta": {}, "playerId": 0}}}
            for i in range(2)}
        frame = {"fixtureId": f"id10000{rng.randrange(400):04d}61624412",
                 "bookmakerOdds": {rng.choice(BOOKMAKERS): {"markets": {market: {"outcomes": outcomes}}}}}
        derived = derive(adapter, feed.kind, orjson.dumps(frame), received_at=at, source="oddspapi",
                         connection_id=connection, seq=seq, event_id=None, max_frame_bytes=8 << 20)
        assert len(derived.records) == 2, derived.records
        units.append((derived.raw, derived.records))
    return units


class _OldPickler(pickle.Pickler):
    """The OWS1 writer of the previous version (driver UUID subclasses written as plain UUIDs)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, uuid.UUID) and type(obj) is not uuid.UUID:
            return uuid.UUID, (str(obj),)
        return NotImplemented


def pickle_encode(batch_id: uuid.UUID, units: Any) -> bytes:
    buffer = io.BytesIO()
    _OldPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((batch_id, units))
    return buffer.getvalue()


FORMATS: dict[str, tuple[bytes, Callable[[uuid.UUID, Any], bytes]]] = {
    "OWS1 pickle": (spoolcodec.MAGIC_PICKLE, pickle_encode),
    "OWS2 json": (spoolcodec.MAGIC, spoolcodec.encode),
}


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, batches: list[tuple[uuid.UUID, Any]], repeat: int) -> dict[str, float]:
    magic, encoder = FORMATS[name]
    payloads = [encoder(b, u) for b, u in batches]
    for (batch_id, units), payload in zip(batches, payloads, strict=True):
        assert spoolcodec.decode(magic, payload) == (batch_id, units), f"{name} does not round-trip"
    encode_s = best(repeat, lambda: [encoder(b, u) for b, u in batches])
    decode_s = best(repeat, lambda: [spoolcodec.decode(magic, p) for p in payloads])

    def round_trip() -> None:
        original = spool_module.encode, spool_module.MAGIC
        spool_module.encode, spool_module.MAGIC = encoder, magic  # type: ignore[assignment]
        try:
            with tempfile.TemporaryDirectory(prefix="owh-spool-bench-") as directory:
                spool = spool_module.Spool(Path(directory), fsync=False)
                for batch_id, units in batches:
                    spool.append(batch_id, units)
                while spool.peek() is not None:
                    spool.commit_head()
                spool.close()
        finally:
            spool_module.encode, spool_module.MAGIC = original

    spool_s = best(repeat, round_trip)
    frames = sum(len(u) for _, u in batches)
    return {"encode": encode_s / frames * 1e6, "decode": decode_s / frames * 1e6, "spool": frames / spool_s,
            "bytes": sum(len(p) for p in payloads) / frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--frames", type=int, default=1000, help="frames per batch")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    units = oddspapi_units(args.batches * args.frames, seed=7)
    batches = [(uuid.uuid4(), units[i:i + args.frames]) for i in range(0, len(units), args.frames)]
    results = {name: measure(name, batches, args.repeat) for name in FORMATS}
    base = results["OWS1 pickle"]
    print(f"{args.batches} batches x {args.frames} OddsPapi frames (1 raw + 2 price_ticks each), best of {args.repeat}")
    print(f"{'format':<12} {'encode us/frame':>16} {'decode us/frame':>16} {'spool frames/s':>15} {'bytes/frame':>12}")
    for name, r in results.items():
        print(f"{name:<12} {r['encode']:>16.2f} {r['decode']:>16.2f} {r['spool']:>15,.0f} {r['bytes']:>12.0f}")
    new = results["OWS2 json"]
    print(f"OWS2 / OWS1: encode time x{new['encode'] / base['encode']:.2f},"
          f" decode time x{new['decode'] / base['decode']:.2f}, spool throughput x{new['spool'] / base['spool']:.2f},"
          f" size x{new['bytes'] / base['bytes']:.2f}")


if __name__ == "__main__":
    main()
