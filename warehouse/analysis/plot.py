"""Line-movement charts: one panel per selection, one step line per bookmaker."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

MAX_PANELS = 8  # a chart with more selections is unreadable; the busiest ones are drawn


def line_movement(rows: Iterable[tuple[datetime, str, str, float]], title: str, out: Path) -> Path:
    """Draw `rows` (see `draw`) to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers or under cron
    import matplotlib.pyplot as plt

    figure = draw(rows, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def draw(rows: Iterable[tuple[datetime, str, str, float]], title: str):
    """A matplotlib Figure of rows (received_at, bookmaker, selection, price), as `relations.LINE_MOVEMENT`
    returns them: one panel per selection (the busiest `MAX_PANELS`), a step line per bookmaker."""
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, tuple[list, list]]] = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for when, bookmaker, selection, price in rows:
        times, prices = series[selection][bookmaker]
        times.append(when)
        prices.append(price)
    if not series:
        raise ValueError(f"no prices for {title}; list fixtures and markets with: "
                         "SELECT fixture_id, market_id, count(*) FROM price_ticks GROUP BY 1, 2")
    busiest = sorted(series, key=lambda s: -sum(len(t) for t, _ in series[s].values()))[:MAX_PANELS]
    figure, axes = plt.subplots(len(busiest), 1, sharex=True, squeeze=False,
                                figsize=(11, 1.6 + 2.0 * len(busiest)))
    for axis, selection in zip(axes[:, 0], sorted(busiest), strict=True):
        for bookmaker, (times, prices) in sorted(series[selection].items()):
            axis.step(times, prices, where="post", label=bookmaker, linewidth=1.2)
        axis.set_ylabel(f"{selection}\nprice")
        axis.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="bookmaker")
    axes[-1, 0].set_xlabel("received (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure
