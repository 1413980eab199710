"""The cyclic collector stays out of the way of the frames the writer may hold (collect/gc_settle.py)."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from bench._peer import oddspapi_frames
from warehouse.collect import gc_settle
from warehouse.config import WriterSettings
from warehouse.feeds.derive import derive
from warehouse.feeds.oddspapi import Adapter


@pytest.fixture
def restored_gc() -> Iterator[list[int]]:
    """The young collections that ran meanwhile; the collector's settings as they were, after."""
    threshold = gc.get_threshold()
    young: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 0:
            young.append(info["collected"])

    gc.callbacks.append(count)
    try:
        yield young
    finally:
        gc.callbacks.remove(count)
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_units_a_writer_may_hold_trigger_no_young_collection(restored_gc: list[int]) -> None:
    units_in_flight = 10_000
    gc_settle.settle(units_in_flight)
    frames = oddspapi_frames(random.Random(3), datetime.now(UTC))
    adapter, connection, now = Adapter("oddspapi"), uuid4(), datetime.now(UTC)
    held = []
    for seq in range(units_in_flight):
        derived = derive(adapter, "oddspapi-ws", next(frames), received_at=now, source="oddspapi",
                         connection_id=connection, seq=seq, event_id=None, max_frame_bytes=1 << 20)
        held.append((derived.raw, derived.records))  # what the writer's queue holds
    assert len(held) == units_in_flight and len(held[-1][1]) == 2
    assert restored_gc == []  # the old fixed threshold (50,000) ran young collections here


def test_the_threshold_covers_the_default_writer_and_never_falls_below_the_minimum() -> None:
    settings = WriterSettings()
    in_flight = settings.queue_units + 2 * settings.batch_rows
    assert gc_settle.young_threshold(in_flight) == gc_settle.CONTAINERS_A_UNIT * in_flight >= 1_000_000
    assert gc_settle.young_threshold(0) == gc_settle.MIN_YOUNG_THRESHOLD
