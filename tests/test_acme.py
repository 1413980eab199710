"""The worked example's own hook: Acme frames arrive gzip-compressed (docs/adding-a-feed.md)."""

from __future__ import annotations

import gzip

import pytest

from warehouse.feeds.acme import FEED
from warehouse.feeds.contract import FrameError


def test_gzip_frames_are_decoded_to_their_json_text() -> None:
    assert FEED.decode(gzip.compress(b'{"type":"heartbeat"}'), limit=1000) == b'{"type":"heartbeat"}'


def test_a_frame_that_is_not_gzip_or_cut_short_cannot_be_decoded() -> None:
    with pytest.raises(FrameError, match="not gzip"):
        FEED.decode(b'{"type":"heartbeat"}', limit=1000)
    whole = gzip.compress(b'{"type":"price","fixture":"f","market":"m","selection":"s","price":2.0}')
    with pytest.raises(FrameError, match="cut short"):
        FEED.decode(whole[: len(whole) // 2], limit=1000)


def test_decoding_stops_past_the_frame_size_limit() -> None:
    bomb = gzip.compress(b" " * 10_000_000)  # ~10 KB that would inflate to 10 MB
    assert len(FEED.decode(bomb, limit=4096)) == 4097  # one byte over: quarantined as too large
