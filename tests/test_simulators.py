"""The simulators themselves: a market a bookmaker would quote, faults exact to the frame."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from warehouse.feeds.registry import FEEDS
from warehouse.simulate import oddspapi, saba
from warehouse.simulate.market import Market, PriceChange
from warehouse.simulate.oddspapi import OddsPapiFaults, OddsPapiSimulator


def test_a_decided_match_never_quotes_a_price_without_payout() -> None:
    """At the end of a match the result is all but certain: the winner at 1.01, never 1.0 or less (no
    payout), the others at most 1001."""
    now = [1_790_000_000.0]
    market = Market(seed=3, match_s=60, kickoff_in_s=5, clock=lambda: now[0])
    prices = []
    for _ in range(20_000):  # three matches in each of the market's places
        now[0] += 0.01
        if isinstance(change := market.step(), PriceChange):
            prices += change.prices.values()
    assert min(prices) == 1.01 and max(prices) <= 1001.0


def test_a_market_running_for_days_keeps_quoting() -> None:
    """Days of matches, one after another: every price stays between 1.01 and 1001, and the market
    keeps its size (tests/test_market.py: the simulators' state too)."""
    now = [1_790_000_000.0]
    market = Market(seed=5, fixtures_count=1, kickoff_in_s=0, clock=lambda: now[0])
    played = set()
    for _ in range(30_000):
        now[0] += 10
        change = market.step()
        played.add(change.fixture.fixture_id)
        if isinstance(change, PriceChange):
            assert all(1.01 <= p <= 1001.0 for p in change.prices.values())
    assert len(played) > 400 and len(market.fixtures) == 1
    assert all(f.home_score + f.away_score <= 5 for f in market.fixtures)


def test_oddspapi_firehose_bursts_keep_faults_frame_exact() -> None:
    """As fast as it goes, frames leave in bursts of many per socket write; the faults still count
    single frames: exactly `drop_after` frames, every `malformed_every`-th cut short, then the drop."""

    async def scenario() -> tuple[list[bytes], OddsPapiSimulator]:
        simulator = OddsPapiSimulator("k", rate=None, script=[b'{"fixtureId": "\xff"}'],
                                      faults=OddsPapiFaults(drop_after=150, malformed_every=7))
        url = await simulator.start("127.0.0.1", 0)
        received: list[bytes] = []
        try:
            async with asyncio.timeout(20), connect(f"{url}?apiKey=k", compression="deflate") as ws:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        received.append(await ws.recv(decode=False))
        finally:
            await simulator.stop()
        return received, simulator

    received, simulator = asyncio.run(scenario())
    assert len(received) == simulator.sent_count == 150
    assert received == simulator.sent  # byte for byte, in order
    assert received[0] == b'{"fixtureId": "\xff"}'  # not UTF-8: went as a binary frame, unchanged
    for n, frame in enumerate(received[1:], start=2):
        if n % 7 == 0:
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(frame)
        else:
            assert "fixtureId" in orjson.loads(frame)


def load_options(kind: str, **values: object) -> object:
    return FEEDS[kind].options(**values)


def test_simulators_serving_a_config_count_frames_but_keep_none() -> None:
    """`warehouse simulate` runs for days: frames sent are counted, not kept (tests keep them)."""

    async def scenario() -> tuple[OddsPapiSimulator, saba.SabaSimulator, int, int]:
        market = Market(seed=2)
        papi = oddspapi.VENDOR.from_feed(None, {"api_key_env": "k"}, market)
        papi.rate = 500.0
        sse = saba.VENDOR.from_feed(load_options("saba-sse", url="http://x"), {"token_env": "t"}, market)
        sse.rate = 500.0
        papi_url, sse_url = await papi.start("127.0.0.1", 0), await sse.start("127.0.0.1", 0)
        got_ws = got_sse = 0
        try:
            async with asyncio.timeout(20):
                async with connect(f"{papi_url}?apiKey=k") as ws:
                    while got_ws < 50:
                        await ws.recv()
                        got_ws += 1
                headers = {"Authorization": "Bearer t", "Accept": "text/event-stream"}
                async with httpx.AsyncClient() as client, client.stream(
                        "GET", f"{sse_url}/sports/stream/v1/GetEvents", headers=headers) as response:
                    async for line in response.aiter_lines():
                        got_sse += line.startswith("id: ")
                        if got_sse == 50:
                            break
        finally:
            await papi.stop()
            await sse.stop()
        return papi, sse, got_ws, got_sse

    papi, sse, got_ws, got_sse = asyncio.run(scenario())
    assert papi.sent_count >= got_ws == 50 and papi.sent == []
    assert sse.sent_count >= got_sse == 50 and sse.sent == {}
