"""The README's examples run as written against the demo's data: every SQL statement in PostgreSQL and
on the query surface, and the Python example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from warehouse import analysis
from warehouse.store.embedded import EmbeddedPostgres

README = Path(__file__).resolve().parent.parent / "README.md"
# Statements the demo's 30 seconds of data must answer with rows (the quarantine query may be empty:
# the demo's vendors send no malformed frames).
MAY_BE_EMPTY = ("FROM quarantine",)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def querying_statements() -> list[str]:
    section = README.read_text().split("## Querying", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    statements = [s.strip() for block in blocks for s in re.split(r";\s*$", block, flags=re.M)]  # ends a line
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo, run once, as a new user runs it: its database URL."""
    data = tmp_path_factory.mktemp("readme") / "data"
    env = {**os.environ, "WAREHOUSE_DATA_DIR": str(data)}
    env.pop("WAREHOUSE_DATABASE_URL", None)
    server = EmbeddedPostgres(data / "postgres")
    try:
        result = subprocess.run([sys.executable, "-m", "warehouse", "demo", "--seconds", "20", "--seed", "9"],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        yield server.url()
    finally:
        server.destroy()


def test_the_readme_has_the_querying_examples_it_promises() -> None:
    assert len(querying_statements()) == 15


def test_every_sql_example_runs_in_postgresql_and_on_the_query_surface(demo: str) -> None:
    con = analysis.connect(demo)
    with psycopg.connect(demo, autocommit=True) as conn:
        for statement in querying_statements():
            in_postgres = conn.execute(statement).fetchall()
            on_surface = con.execute(statement).fetchall()
            if not any(marker in statement for marker in MAY_BE_EMPTY):
                assert in_postgres, statement
            assert len(on_surface) == len(in_postgres), statement


def test_the_line_movement_example_shows_no_float_noise(demo: str) -> None:
    (statement, *_) = querying_statements()
    with psycopg.connect(demo, autocommit=True) as conn:
        rows = conn.execute(statement).fetchall()
    moves = [row[4] for row in rows if row[4] is not None]
    assert moves and all(move == round(move, 3) for move in moves)


@pytest.mark.filterwarnings("error")  # a new user's first Python should not print a warning either
def test_the_python_example_runs_against_the_demo(demo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = blocks("python")
    monkeypatch.setenv("WAREHOUSE_DATABASE_URL", demo)
    names: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), names)
    assert names["latest"] and names["board"]
    assert list(names["steam"].columns)[:3] == ["fixture_id", "market_id", "outcome_id"]  # type: ignore[attr-defined]
