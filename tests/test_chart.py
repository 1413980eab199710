"""The line-movement chart, drawn from a real warehouse (PostgreSQL, then its Parquet export): what a
trader reads on it, checked on the matplotlib Figure `plot.draw` returns."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import matplotlib.dates as mdates
import pytest
from matplotlib.ticker import PercentFormatter

from warehouse.analysis import plot
from warehouse.analysis.engine import Engine
from warehouse.config import WriterSettings
from warehouse.lifecycle.export import export_day
from warehouse.records import CollectorEvent, FixtureChange, PriceTick, RawMessage, Record, ScoreChange
from warehouse.store.writer import Writer

DAY = datetime.now(UTC).date() - timedelta(days=1)
T = datetime(DAY.year, DAY.month, DAY.day, 18, tzinfo=UTC)
S = timedelta(seconds=1)
KICKOFF, GOAL, GAP_FROM, GAP_TO = T + 20 * S, T + 30 * S, T + 40 * S, T + 45 * S
CONN, CONN2 = UUID("0b7e7d3c-5f7c-4a8e-9d2f-444444444444"), UUID("0b7e7d3c-5f7c-4a8e-9d2f-555555555555")


def oddspapi_match() -> list[tuple[datetime, str, list[Record]]]:
    """One minute of an OddsPapi 1X2 market at two bookmakers: kick-off at 20 s, a goal at 30 s (both
    books suspended 30-32 s; the exchange feed reports the goal again, with the minute), and the
    OddsPapi feed disconnected from 40 to 45 s (the exchange feed's own gap is not this market's)."""
    frames: list[tuple[datetime, str, list[Record]]] = [
        (T - S, "oddspapi", [CollectorEvent(T - S, "oddspapi", CONN, "connect")]),
        (T - S, "mm", [CollectorEvent(T - S, "mm", CONN, "connect")]),
        (T, "oddspapi", [FixtureChange(T, "oddspapi", "F1", "change", start_time=KICKOFF, status="0")]),
        (KICKOFF, "oddspapi", [ScoreChange(KICKOFF, "oddspapi", "F1", "0", 0, 0)]),
        (GOAL, "oddspapi", [ScoreChange(GOAL, "oddspapi", "F1", "0", 1, 0)]),
        (GOAL + S / 2, "mm", [ScoreChange(GOAL + S / 2, "mm", "F1", home_score=1, away_score=0, minute=23)]),
        (GAP_FROM, "oddspapi", [CollectorEvent(GAP_FROM, "oddspapi", CONN, "disconnect")]),
        (GAP_FROM + S, "oddspapi", [CollectorEvent(GAP_FROM + S, "oddspapi", None, "disconnect")]),  # still out
        (GAP_TO, "oddspapi", [CollectorEvent(GAP_TO, "oddspapi", CONN2, "connect")]),
        (T + 10 * S, "mm", [CollectorEvent(T + 10 * S, "mm", CONN, "disconnect")]),
        (T + 12 * S, "mm", [CollectorEvent(T + 12 * S, "mm", CONN2, "connect")]),
    ]
    for second in range(60):
        if GAP_FROM <= T + second * S < GAP_TO:
            continue  # nothing heard
        at = T + second * S
        home = 2.0 if at < GOAL else 1.25
        for book in ("A", "B"):
            active = not GOAL <= at < GOAL + 2 * S
            frames.append((at, "oddspapi", [PriceTick(at, "oddspapi", book, "F1", "101", outcome, price, "0",
                                                      active=active)
                                            for outcome, price in (("101", home), ("102", 3.5), ("103", 4.0))]))
    return sorted(frames, key=lambda frame: frame[0])


def saba_match() -> list[tuple[datetime, str, list[Record]]]:
    """A Saba 1X2 market: the vendor names its outcomes (keyName, in the snapshot) and its teams."""
    event = {"eventId": 38255274, "teamInfo": {"homeName": "Ajax", "awayName": "Benfica"}}
    frames: list[tuple[datetime, str, list[Record]]] = [
        (T, "saba", [FixtureChange(T, "saba", "38255274", "add", start_time=KICKOFF, status="running",
                                   changes=event)])]
    for second in range(30):
        at = T + second * S
        attrs = (lambda name: {"keyName": name}) if second == 0 else (lambda name: None)
        frames.append((at, "saba", [PriceTick(at, "saba", "saba", "38255274", "274175476", key, price,
                                              active=True, attrs=attrs(name))
                                    for key, name, price in (("1", "Home", 1.9), ("x", "Draw", 3.4),
                                                             ("2", "Away", 4.2 + second / 100))]))
    return frames


def store(url: str, tmp_path: Path, frames: list[tuple[datetime, str, list[Record]]]) -> None:
    async def main() -> None:
        async with Writer(url, WriterSettings(spool_dir=tmp_path / "spool")) as writer:
            for seq, (when, source, records) in enumerate(frames, 1):
                events = [r for r in records if isinstance(r, CollectorEvent)]
                if events:
                    await writer.put(None, events)
                else:
                    await writer.put(RawMessage(when, source, CONN, seq, "frame", b"{}"), records)

    asyncio.run(main())


@pytest.fixture
def warehouse(db_url: str, tmp_path: Path) -> str:
    store(db_url, tmp_path, oddspapi_match() + saba_match())
    return db_url


def span(patch) -> tuple[datetime, datetime]:
    return mdates.num2date(patch.get_x()), mdates.num2date(patch.get_x() + patch.get_width())


def when(x) -> datetime:
    """A point's time as drawn (matplotlib keeps what it was given, or its float date)."""
    return x if isinstance(x, datetime) else mdates.num2date(x)


def test_the_chart_names_outcomes_and_marks_gaps_goals_and_kickoff(warehouse: str) -> None:
    figure = plot.draw(plot.chart_data(Engine.warehouse(warehouse), "F1", "101"))
    axes = figure.axes
    assert [axis.get_ylabel() for axis in axes] == ["Home", "Draw", "Away"]  # not "101 0 price"
    assert axes[0].get_title(loc="left").startswith("fixture F1 · 1X2")
    legend = [text.get_text() for text in axes[0].get_legend().get_texts()]
    assert legend == ["A", "B", "kick-off", "goal (score)", "oddspapi not connected"]  # mm's gap is not this market's

    for axis in axes:  # the OddsPapi feed's one gap, on every panel, exactly where it was
        gaps = [patch for patch in axis.patches if patch.get_gid() == "gap"]
        assert len(gaps) == 1 and span(gaps[0]) == (GAP_FROM, GAP_TO)
        goals = [line for line in axis.lines if line.get_gid() == "goal"]
        assert [when(line.get_xdata()[0]) for line in goals] == [GOAL]  # the first report
        kickoffs = [line for line in axis.lines if line.get_gid() == "kickoff"]
        assert [when(line.get_xdata()[0]) for line in kickoffs] == [KICKOFF]
    marks = [text.get_text() for text in axes[0].texts]
    assert marks == ["kick-off", "1-0 23'"]  # the minute from the feed that reported one


def test_the_y_axis_is_implied_probability_and_suspensions_break_the_line(warehouse: str) -> None:
    figure = plot.draw(plot.chart_data(Engine.warehouse(warehouse), "F1", "101"))
    home = figure.axes[0]
    assert figure.get_supylabel() == "implied probability (100 / price)"
    assert isinstance(home.yaxis.get_major_formatter(), PercentFormatter)
    assert home.get_yscale() == "linear"
    low, high = home.get_ylim()
    assert 0 <= low < 50 and 80 < high <= 100  # 2.00 → 1.25 is 50 % → 80 %: the panel fits the moves
    line = next(line for line in home.lines if line.get_label() == "A")
    times = [when(x) for x in line.get_xdata()]
    values = dict(zip(times, line.get_ydata(), strict=True))
    assert values[T] == pytest.approx(50.0) and values[T + 59 * S] == pytest.approx(80.0)
    assert math.isnan(values[GOAL]) and math.isnan(values[GOAL + S])  # suspended: no line
    assert math.isnan(values[GAP_FROM])  # nobody listening: no line either, until the next price
    assert [t for t in times if GAP_FROM <= t < GAP_TO] == [GAP_FROM]


def test_the_time_axis_is_utc_clock_time(warehouse: str) -> None:
    figure = plot.draw(plot.chart_data(Engine.warehouse(warehouse), "F1", "101"))
    bottom = figure.axes[-1]
    formatter = bottom.xaxis.get_major_formatter()
    assert isinstance(formatter, mdates.DateFormatter) and formatter.fmt == "%H:%M:%S"
    figure.canvas.draw()
    labels = [label.get_text() for label in bottom.get_xticklabels() if label.get_text()]
    assert 5 <= len(labels) <= 13 and labels[0].startswith("18:00:")
    assert bottom.get_xlabel() == f"received (UTC, {DAY:%Y-%m-%d})"


def test_a_vendor_that_names_outcomes_and_teams_is_named(warehouse: str) -> None:
    figure = plot.draw(plot.chart_data(Engine.warehouse(warehouse), "38255274", "274175476"))
    assert [axis.get_ylabel() for axis in figure.axes] == ["Home\nAjax", "Draw", "Away\nBenfica"]
    assert figure.axes[0].get_title(loc="left").startswith("Ajax v Benfica · 1X2")


def test_the_chart_is_the_same_from_the_parquet_export(warehouse: str, tmp_path: Path) -> None:
    for table in ("price_ticks", "fixture_changes", "score_changes", "collector_events"):
        export_day(warehouse, tmp_path / "export", table, DAY)
    engine = Engine.export(tmp_path / "export")
    for fixture, market in (("F1", "101"), ("38255274", "274175476")):
        on_parquet, on_postgres = plot.chart_data(engine, fixture, market), plot.chart_data(
            Engine.warehouse(warehouse), fixture, market)
        assert on_parquet.title == on_postgres.title
        assert on_parquet.gaps == on_postgres.gaps and on_parquet.goals == on_postgres.goals
        assert on_parquet.kickoff == on_postgres.kickoff
        assert [s.label for s in on_parquet.selections] == [s.label for s in on_postgres.selections]
        for left, right in zip(on_parquet.selections, on_postgres.selections, strict=True):
            assert left.series.keys() == right.series.keys()
            for book in left.series:
                assert left.series[book][0] == right.series[book][0]
                assert [round(v, 9) if not math.isnan(v) else None for v in left.series[book][1]] == \
                       [round(v, 9) if not math.isnan(v) else None for v in right.series[book][1]]


def test_no_prices_is_one_clear_line(warehouse: str) -> None:
    with pytest.raises(ValueError, match="no prices for fixture nope · market 1; list fixtures"):
        plot.chart_data(Engine.warehouse(warehouse), "nope", "1")
