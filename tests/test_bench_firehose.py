"""bench/firehose.py end to end on a few frames: the real `warehouse collect` against the firehose's
peer stores every frame sent exactly once, for each feed's handshake and framing. Nothing timed:
the figures depend on the machine; what must hold anywhere is the count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "firehose.py"
FRAMES = 1500
OPENING = {"oddspapi": 0, "saba": 1, "ckex": 0, "mm": 1}  # Saba's snapshot, MM's `subscribed`
# rows derived from each frame at least (OddsPapi: exactly two prices; Saba: a market and its three
# prices; CKEX: three products, or a fancy market's back and lay; MM: one change)
ROWS_PER_FRAME = {"oddspapi": 2, "saba": 4, "ckex": 2, "mm": 1}


def firehose(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(BENCH), "--frames", str(FRAMES), "--warmup", "0", "--json", *args],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# OddsPapi in the default suite; the other feeds' handshakes and framing are each feed's own tests too
ON_REQUEST = [pytest.param(feed, marks=pytest.mark.slow) for feed in ("saba", "ckex", "mm")]


@pytest.mark.parametrize("feed", ["oddspapi", *ON_REQUEST])
def test_every_frame_sent_is_stored_exactly_once(feed: str) -> None:
    paced = ["--rate", "400", "--latency-seconds", "1", "--ceiling"] if feed == "oddspapi" else ["--rate", "0"]
    report = firehose("--feed", feed, *paced)
    runs = {run["kind"]: run for run in report["runs"] if run["kind"] != "ceiling"}
    assert set(runs) == ({"sink", "firehose", "paced"} if feed == "oddspapi" else {"sink", "firehose"})
    if feed == "oddspapi":  # PostgreSQL alone: the firehose run's rows again, from their COPY bytes
        ceilings = [(r["connections"], r["stored"], r["rows"]) for r in report["runs"] if r["kind"] == "ceiling"]
        assert ceilings == [(1, FRAMES, FRAMES * 2), (2, FRAMES, FRAMES * 2)]
    assert runs["sink"]["frames"] == FRAMES + OPENING[feed]
    for kind, frames in (("firehose", FRAMES), ("paced", 400)):
        if kind not in runs:
            continue
        run = runs[kind]
        sent = frames + OPENING[feed]
        assert (run["sent"], run["stored"], run["distinct"], run["quarantined"]) == (sent, sent, sent, 0), run
        assert run["stored_once"] is True
        assert run["connections"] == 1
        if feed == "oddspapi":
            assert run["rows"] == frames * 2
        assert run["rows"] >= frames * ROWS_PER_FRAME[feed], run  # an opening derives rows too
        assert run["peak_rss_mb"] > 0  # (frames/s needs more frames than a smoke test sends: not asserted)
    if "paced" in runs:
        assert 0 < runs["paced"]["p50_ms"] <= runs["paced"]["p99_ms"] <= runs["paced"]["max_ms"]
