"""Line-movement charts: one panel per selection, one step line per bookmaker."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from warehouse.analysis.engine import Engine
from warehouse.analysis.relations import BUSIEST_MARKETS, LINE_MOVEMENT

MAX_PANELS = 8  # a chart with more selections is unreadable; the busiest ones are drawn


def chart_market(engine: Engine, fixture: str | None, market: str | None, out: Path | None, *,
                 default_dir: Path) -> Path:
    """Chart one market (default: the one most bookmakers price; with only `fixture`, its busiest) to `out`,
    or to line-<fixture>-<market>.png in `default_dir`."""
    if fixture is None or market is None:
        candidates = [row for row in engine.rows(BUSIEST_MARKETS, 1000) if fixture in (None, row[0])]
        if not candidates:
            raise ValueError("no prices stored yet" + (f" for fixture {fixture!r}" if fixture else "")
                             + "; run `warehouse demo` or a collector first")
        fixture, market = candidates[0][:2]
    path = out or default_dir / f"line-{fixture}-{market}.png"
    return line_movement(engine.rows(LINE_MOVEMENT, fixture, market), f"fixture {fixture} · market {market}", path)


def line_movement(rows: Iterable[tuple[datetime, str, str, float]], title: str, out: Path) -> Path:
    """Draw `rows` (see `draw`) to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers or under cron
    import matplotlib.pyplot as plt

    figure = draw(rows, title)
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
