"""Keep the cyclic garbage collector out of the receive→commit path.

Frames become dicts and tuples that reference counting frees as soon as their batch commits; they
form no cycles. What the cyclic collector scans is everything else: every object of every imported
library. Measured at 5,000 frames/s (bench/collect.py), full collections paused the event loop for
up to 71 ms, and young collections (every 700 allocations) cost ~3% of the collector's CPU.

A young collection runs once the container objects made since the last one, less those freed since,
pass a threshold; what it scans is every container made since and still alive. At full speed the
frames in flight (the writer's queue and the two batches it works on) are several hundred thousand
containers: with a threshold below that, young collections ran every half second, each scanning
them all (~47 ms), ~15 % of the collector's CPU at 30,000 frames/s (docs/performance.md, "Collector
CPU after the second connection"). The threshold is therefore above what the writer can hold, so
frames coming and going never trigger one; a real leak of containers (or garbage cycles) still does.
"""

from __future__ import annotations

import gc

# Containers a unit in flight may hold (a frame's raw row, its records and their attrs, the tuples COPY
# takes: ~10 for a two-price OddsPapi frame, more for Saba's), with room to spare.
CONTAINERS_A_UNIT = 25
MIN_YOUNG_THRESHOLD = 50_000
MAX_YOUNG_THRESHOLD = 2_500_000  # a huge queue_units must not turn young collections off altogether


def young_threshold(units_in_flight: int) -> int:
    """Allocations (net of frees) before a young collection, for a writer holding this many units at most."""
    return min(MAX_YOUNG_THRESHOLD, max(MIN_YOUNG_THRESHOLD, CONTAINERS_A_UNIT * units_in_flight))


def settle(units_in_flight: int = 0) -> None:
    """Call once start-up is done: collect what start-up left, move every surviving object to the
    permanent generation (gc.freeze: never scanned again), and make young collections rare: none while
    no more than `units_in_flight` frames with their rows are alive."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold(units_in_flight), middle, old)
