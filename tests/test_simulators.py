"""The simulated market stays a market a bookmaker would quote, however long it runs."""

from __future__ import annotations

from warehouse.simulate.market import Market, PriceChange


def test_a_long_random_walk_never_quotes_a_price_without_payout() -> None:
    market = Market(seed=3)
    for fixture in market.fixtures:  # the walk has taken one outcome to near certainty
        fixture.logits = [12.0, -6.0, -12.0]
    prices = [p for _ in range(5000) if isinstance(c := market.step(), PriceChange) for p in c.prices.values()]
    assert prices and min(prices) == 1.01 and max(prices) <= 1001.0
