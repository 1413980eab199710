"""The SQL the README shows users runs, and answers what it says it answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FIXTURE = "id1100097561092987"
T0 = datetime(2026, 11, 21, 17, 0, tzinfo=UTC)


def querying_statements() -> list[str]:
    section = README.read_text().split("## Querying", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    statements = [s.strip() for block in blocks for s in block.split(";")]
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


def test_readme_queries_run_and_answer(storage_url: str) -> None:
    statements = querying_statements()
    assert len(statements) == 8
    with psycopg.connect(storage_url, autocommit=True) as conn:
        for seconds, book, outcome, price in [(0, "pinnacle", "111", 2.0), (0, "pinnacle", "112", 1.9),
                                              (30, "stake", "111", 2.1), (60, "pinnacle", "111", 2.5),
                                              (90, "stake", "111", 2.4)]:
            conn.execute(
                "INSERT INTO price_ticks (received_at, source, bookmaker, fixture_id, market_id, outcome_id,"
                " player_id, price, active) VALUES (%s, 'oddspapi', %s, %s, '111', %s, '0', %s, true)",
                (T0 + timedelta(seconds=seconds), book, FIXTURE, outcome, price),
            )
        conn.execute("INSERT INTO fixture_changes (received_at, source, fixture_id, action, start_time)"
                     " VALUES (%s, 'oddspapi', %s, 'add', %s)", (T0, FIXTURE, T0 + timedelta(seconds=75)))
        for seconds, event in [(0, "connect"), (100, "disconnect"), (160, "connect")]:
            conn.execute("INSERT INTO collector_events (received_at, source, event) VALUES (%s, 'oddspapi', %s)",
                         (T0 + timedelta(seconds=seconds), event))
        conn.execute("INSERT INTO quarantine (received_at, source, reason, frame) VALUES (now(), 'saba', 'bad', '{')")

        movement, latest, lines, candles, margin, steam, gaps, quarantined = (
            conn.execute(s).fetchall() for s in statements)

    assert [r[1:5] for r in movement] == [("pinnacle", 2.0, None, None), ("stake", 2.1, None, None),
                                          ("pinnacle", 2.5, 2.0, 0.5), ("stake", 2.4, 2.1, pytest.approx(0.3))]
    assert [(float(r[5]), float(r[6])) for r in movement[2:]] == [(0.25, 0.4), (0.1429, 0.4167)]
    assert [r[:4] for r in latest] == [("pinnacle", "111", "111", 2.5), ("pinnacle", "111", "112", 1.9),
                                       ("stake", "111", "111", 2.4)]
    assert [(r[0], r[1], r[2], r[3], float(r[4])) for r in lines] == [
        ("pinnacle", "111", 2.0, 2.5, 0.25), ("pinnacle", "112", 1.9, 1.9, 0.0), ("stake", "111", 2.1, 2.1, 0.0)]
    assert [r[1:] for r in candles] == [("pinnacle", 2.0, 2.5, 2.0, 2.5, 2), ("stake", 2.1, 2.4, 2.1, 2.4, 2)]
    assert [(r[0], r[1], r[2], float(r[3])) for r in margin] == [
        (T0, "pinnacle", 2, 0.0263), (T0 + timedelta(seconds=60), "pinnacle", 2, -0.0737)]
    assert steam == [(T0 + timedelta(seconds=60), "111", "drifted", "pinnacle", 2.0, 2.5, ["pinnacle", "stake"])]
    assert gaps == [("oddspapi", T0 + timedelta(seconds=100), T0 + timedelta(seconds=160), timedelta(seconds=60))]
    assert [(r[1], r[2], r[3]) for r in quarantined] == [("saba", "bad", None)]
