"""Line-movement charts a trader reads: one panel per outcome, one line per bookmaker, on an implied
probability axis; suspensions break a line, disconnections are shaded, kick-off and goals marked; asked
for, the consensus fair probability beside the bookmakers' lines and the arbitrage windows shaded
(why: docs/simulated-matches-and-charts.md).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warehouse.analysis.engine import Engine
from warehouse.analysis.relations import (
    ARBITRAGE,
    BUSIEST_MARKETS,
    CONSENSUS_LINE,
    FIXTURE_FACTS,
    GAPS,
    LINE_MOVEMENT,
    METHODS,
    OUTCOME_NAMES,
    SCORES,
)
from warehouse.feeds.registry import FEEDS

MAX_PANELS = 8  # a chart with more selections is unreadable; the busiest ones are drawn
CONSENSUS_SAMPLES = 200  # moments the consensus is computed at: each is an as-of over the market's history
Y_LABEL = "implied probability (100 / price)"
_ORDER = ("Home", "Draw", "Away")  # 1X2 panels in the order traders read them


@dataclass
class Selection:
    """One outcome (with its player, line and side) of the market, as every bookmaker priced it."""

    label: str
    series: dict[str, tuple[list[datetime], list[float]]] = field(default_factory=dict)  # implied %, nan: closed
    sources: dict[str, str] = field(default_factory=dict)  # bookmaker → the feed it came from
    consensus: tuple[list[datetime], list[float]] = field(default_factory=lambda: ([], []))  # fair %, nan: none

    @property
    def ticks(self) -> int:
        return sum(len(times) for times, _ in self.series.values())


@dataclass
class Chart:
    fixture: str
    market: str
    selections: list[Selection]  # in the order they are drawn
    start: datetime
    end: datetime
    home: str | None = None
    away: str | None = None
    kickoff: datetime | None = None
    gaps: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # (source, from, to) in the chart
    goals: list[tuple[datetime, str]] = field(default_factory=list)  # (first report, "2-1 67'")
    method: str | None = None  # of the consensus drawn, if one is
    min_edge: float | None = None  # of the arbitrage windows shaded, if they are
    arbitrage: list[tuple[datetime, datetime, float]] = field(default_factory=list)  # (from, to, edge) in the chart

    @property
    def title(self) -> str:
        named = bool(_declared_names(self.market)) or any(_name(s.label) in _ORDER for s in self.selections)
        what = "1X2" if named else f"market {self.market}"
        if self.home and self.away:
            return f"{self.home} v {self.away} · {what}   (fixture {self.fixture}, market {self.market})"
        return f"fixture {self.fixture} · {what}" + (f"   (market {self.market})" if named else "")


def chart_market(engine: Engine, fixture: str | None, market: str | None, out: Path | None, *,
                 default_dir: Path, consensus: str | None = None, arbitrage: float | None = None) -> Path:
    """Chart one market (default: the one most bookmakers price; with only `fixture`, its busiest) to `out`,
    or to line-<fixture>-<market>.png in `default_dir`; with the consensus fair probability by `consensus`
    (a method of fair_prices_as_of) and arbitrage windows of at least `arbitrage` (an edge) if asked."""
    if fixture is None or market is None:
        candidates = [row for row in engine.rows(BUSIEST_MARKETS, 1000) if fixture in (None, row[0])]
        if not candidates:
            raise ValueError("no prices stored yet" + (f" for fixture {fixture!r}" if fixture else "")
                             + "; run `warehouse demo` or a collector first")
        fixture, market = candidates[0][:2]
    path = out or default_dir / f"line-{fixture}-{market}.png"
    chart = chart_data(engine, fixture, market, consensus=consensus, arbitrage=arbitrage)
    import matplotlib

    matplotlib.use("Agg")  # a file, not a window: no display on servers or under cron
    return save(draw(chart), path)


def chart_data(engine: Engine, fixture: str, market: str, *, consensus: str | None = None,
               arbitrage: float | None = None) -> Chart:
    """Everything the chart shows, read with the queries of `relations` (PostgreSQL or Parquet);
    `consensus` (a method) and `arbitrage` (a minimum edge) add those layers."""
    if consensus is not None and consensus not in METHODS:
        raise ValueError(f"consensus method {consensus!r}: use one of {', '.join(METHODS)}")
    if arbitrage is not None and not 0 <= arbitrage < 1:
        raise ValueError(f"arbitrage edge {arbitrage:g}: give a share of the stake from 0 (any) to below 1, e.g. 0.01")
    rows = engine.rows(LINE_MOVEMENT, fixture, market)
    if not rows:
        raise ValueError(f"no prices for fixture {fixture} · market {market}; list fixtures and markets with: "
                         "SELECT fixture_id, market_id, count(*) FROM price_ticks GROUP BY 1, 2")
    facts = engine.rows(FIXTURE_FACTS, fixture)
    home = next((h for _, _, h, _ in reversed(facts) if h), None)
    away = next((a for _, _, _, a in reversed(facts) if a), None)
    names = {outcome: name for outcome, name in engine.rows(OUTCOME_NAMES, fixture, market)}
    names |= _declared_names(market)
    selections: dict[tuple[Any, ...], Selection] = {}
    for when, source, bookmaker, outcome, player, line, side, price, active in rows:
        key = (outcome, player, line, side)
        selection = selections.get(key)
        if selection is None:
            selection = selections[key] = Selection(_label(names.get(outcome), outcome, player, line, side, home, away))
        times, values = selection.series.setdefault(bookmaker, ([], []))
        selection.sources[bookmaker] = source
        times.append(when)
        values.append(100 / price if price > 0 and active is not False else math.nan)
    start, end = rows[0][0], rows[-1][0]
    gaps = _gaps(engine.rows(GAPS, fixture, market), start, end)
    for selection in selections.values():  # nobody listening: no line (the last price is not known to hold)
        for book, (times, values) in selection.series.items():
            for source, began, _ in gaps:
                if selection.sources[book] == source:
                    at = bisect.bisect_left(times, began)
                    times.insert(at, began)
                    values.insert(at, math.nan)
    busiest = sorted(selections.values(), key=lambda s: -s.ticks)[:MAX_PANELS]
    ordered = sorted(busiest, key=lambda s: (_ORDER.index(_name(s.label)) if _name(s.label) in _ORDER else 9,
                                             s.label))
    kickoff = next((s for _, s, _, _ in reversed(facts) if s is not None), None)  # the latest any feed gave
    chart = Chart(fixture, market, ordered, start, end, home, away,
                  kickoff if kickoff is not None and start <= kickoff <= end else None,
                  gaps, _goals(engine.rows(SCORES, fixture), start, end))
    if consensus is not None:
        chart.method = consensus
        _consensus(engine, chart, selections)
    if arbitrage is not None:
        chart.min_edge = arbitrage
        chart.arbitrage = [(began, ended or end, edge) for began, ended, edge in
                           engine.rows(ARBITRAGE, arbitrage, fixture, market)]
    return chart


def _consensus(engine: Engine, chart: Chart, selections: dict[tuple[Any, ...], Selection]) -> None:
    """The consensus fair probability (%) of each drawn selection at evenly spaced moments; nan where no
    bookmaker's market was complete and open."""
    assert chart.method is not None
    moments = [chart.start + (chart.end - chart.start) * n / (CONSENSUS_SAMPLES - 1) for n in range(CONSENSUS_SAMPLES)]
    found: dict[tuple[Any, ...], dict[datetime, float]] = {}
    for at, outcome, player, line, side, prob in engine.rows(CONSENSUS_LINE, moments, chart.method, chart.fixture,
                                                            chart.market):
        found.setdefault((outcome, player, line, side), {})[at] = 100 * prob
    for key, selection in selections.items():
        values = found.get(key, {})
        selection.consensus = (moments, [values.get(at, math.nan) for at in moments])


def _label(name: str | None, outcome: str, player: str | None, line: float | None, side: str | None,
           home: str | None, away: str | None) -> str:
    label = name or f"outcome {outcome}"
    if player not in (None, "0"):  # OddsPapi's "0": not a player market
        label += f" · player {player}"
    if line is not None:
        label += f" {line:g}"
    if side:
        label += f" {side}"
    team = {"Home": home, "Away": away}.get(label)
    return f"{label}\n{team}" if team else label


def _declared_names(market: str) -> dict[str, str]:
    """The outcome names feeds declare for `market` (`Feed.outcome_names`: ids their frames never name)."""
    return {outcome: name for feed in FEEDS.values() for outcome, name in feed.outcome_names.get(market, {}).items()}


def _name(label: str) -> str:
    return label.split("\n", 1)[0]


def _gaps(rows: list[tuple[Any, ...]], start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """Gaps that overlap the chart, cut to it (one still open runs to the chart's end)."""
    return [(source, max(began, start), min(ended or end, end)) for source, began, ended in rows
            if began < end and (ended is None or ended > start)]


def _goals(rows: list[tuple[Any, ...]], start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """The first report of each score above the first one seen (several feeds report each goal, not
    all with the minute: it comes from whichever does)."""
    first: dict[tuple[int, int], datetime] = {}
    minutes: dict[tuple[int, int], int] = {}
    best = None
    for when, home, away, minute in rows:
        score = (home, away)
        if best is not None and home + away > best and score not in first:
            first[score] = when
        if minute is not None:
            minutes.setdefault(score, minute)
        best = home + away if best is None else max(best, home + away)
    return [(when, f"{home}-{away}" + (f" {minutes[home, away]}'" if (home, away) in minutes else ""))
            for (home, away), when in first.items() if start <= when <= end]


def save(figure: Any, out: Path) -> Path:
    """Write a Figure of `draw` to a PNG file."""
    import matplotlib.pyplot as plt

    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def draw(chart: Chart) -> Any:
    """A matplotlib Figure of the chart: a panel per selection, a step line per bookmaker (on the
    current backend: inline in a notebook)."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    books = sorted({book for selection in chart.selections for book in selection.series})
    colours = {book: f"C{n % 10}" for n, book in enumerate(books)}
    figure, axes = plt.subplots(len(chart.selections), 1, sharex=True, squeeze=False,
                                figsize=(12, 1.3 + 2.3 * len(chart.selections)))
    for axis, selection in zip(axes[:, 0], chart.selections, strict=True):
        values = [v for _, vs in selection.series.values() for v in vs if not math.isnan(v)]
        for book, (times, implied) in sorted(selection.series.items()):
            axis.step(times, implied, where="post", color=colours[book], linewidth=1.1, alpha=0.85, label=book)
        if values:
            low, high = min(values), max(values)
            pad = max(1.0, 0.08 * (high - low))
            axis.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
        axis.yaxis.set_major_formatter(PercentFormatter(100, decimals=0 if not values or high - low > 3 else 1))
        axis.set_ylabel(selection.label)
        axis.grid(alpha=0.3)
        for _, began, ended in chart.gaps:
            axis.axvspan(began, ended, facecolor="0.55", alpha=0.3, hatch="//", edgecolor="0.4", linewidth=0, gid="gap")
        for began, ended, _ in chart.arbitrage:
            axis.axvspan(began, ended, facecolor="tab:green", alpha=0.25, linewidth=0, gid="arbitrage")
        times, fair = selection.consensus
        if chart.method is not None and times:
            axis.step(times, fair, where="post", color="black", linewidth=2.0, alpha=0.8, gid="consensus")
        for when, _ in chart.goals:
            axis.axvline(when, color="black", linestyle="--", linewidth=0.9, gid="goal")
        if chart.kickoff is not None:
            axis.axvline(chart.kickoff, color="0.25", linewidth=1.6, gid="kickoff")
    top = axes[0, 0]
    marks = [(chart.kickoff, "kick-off", "0.25")] if chart.kickoff is not None else []
    close = (chart.end - chart.start) * 0.07  # marks closer than this get a row of their own
    rows, previous, row = 0, None, 0
    for when, text, colour in marks + [(when, text, "black") for when, text in chart.goals]:
        row = 1 - row if previous is not None and when - previous < close else 0
        rows, previous = max(rows, row + 1), when
        top.annotate(text, xy=(when, 1.0), xycoords=("data", "axes fraction"), xytext=(2, 3 + 11 * row),
                     textcoords="offset points", fontsize=8, color=colour, va="bottom")
    top.set_title(chart.title, loc="left", fontsize=11, pad=6 + 12 * rows)
    figure.text(0.99, 0.005, "a line breaks while its bookmaker is suspended (not open for bets)", ha="right",
                va="bottom", fontsize=8, color="0.4")
    handles: list[Any] = [Line2D([], [], color=colours[book], linewidth=2, label=book) for book in books]
    if chart.method is not None:
        handles.append(Line2D([], [], color="black", linewidth=2.0, label=f"consensus fair ({chart.method})"))
    if chart.min_edge is not None:
        handles.append(Patch(facecolor="tab:green", alpha=0.25, label=f"arbitrage (edge > {100 * chart.min_edge:g} %)"))
    if chart.kickoff is not None:
        handles.append(Line2D([], [], color="0.25", linewidth=1.6, label="kick-off"))
    if chart.goals:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.9, label="goal (score)"))
    for source in dict.fromkeys(source for source, _, _ in chart.gaps):
        handles.append(Patch(facecolor="0.55", alpha=0.3, hatch="//", edgecolor="0.4", label=f"{source} not connected"))
    top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="bookmaker",
               frameon=False)
    bottom = axes[-1, 0]
    locator = mdates.AutoDateLocator(tz=UTC, minticks=5, maxticks=12)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    bottom.set_xlim(chart.start, chart.end)
    day = chart.start.astimezone(UTC).date()
    bottom.set_xlabel(f"received (UTC, {day:%Y-%m-%d})")
    figure.supylabel(Y_LABEL, fontsize=10)
    figure.tight_layout()
    return figure
