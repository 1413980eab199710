"""The README's and docs' examples run as written against the demo's data: every SQL statement of the
README in PostgreSQL and on the query surface, and every Python block of the README and docs/ (or it is
marked ```python no-run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.markdown import PAGES, README, Block, blocks
from warehouse import analysis
from warehouse.store.embedded import EmbeddedPostgres

# Statements the demo's 30 seconds of data must answer with rows (the quarantine query may be empty:
# the demo's vendors send no malformed frames).
MAY_BE_EMPTY = ("FROM quarantine",)


def querying_statements() -> list[str]:
    section = README.read_text().split("## Querying", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    statements = [s.strip() for block in blocks for s in re.split(r";\s*$", block, flags=re.M)]  # ends a line
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


@dataclass(frozen=True)
class Demo:
    url: str  # its database
    data: Path  # the data directory it ran in
    lake: Path  # its export


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo, run once, as a new user runs it."""
    data = tmp_path_factory.mktemp("readme") / "data"
    env = {**os.environ, "WAREHOUSE_DATA_DIR": str(data)}
    env.pop("WAREHOUSE_DATABASE_URL", None)
    server = EmbeddedPostgres(data / "postgres")
    try:
        result = subprocess.run([sys.executable, "-m", "warehouse", "demo", "--seconds", "20", "--seed", "9"],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        yield Demo(server.url("demo"), data, data / "exports" / "demo")  # its own database, and lake
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def demo(demo_run: Demo) -> str:
    return demo_run.url


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
    (example,) = blocks(README, "python")
    monkeypatch.setenv("WAREHOUSE_DATABASE_URL", demo)
    names: dict[str, object] = {}
    exec(compile(example.code, example.name, "exec"), names)
    assert names["latest"] and names["board"]
    assert list(names["steam"].columns)[:3] == ["fixture_id", "market_id", "outcome_id"]  # type: ignore[attr-defined]


def docs_python() -> list[Block]:
    """The Python blocks of docs/ meant to run (the README's runs above, with its values checked)."""
    return [block for page in PAGES if page != README for block in blocks(page, "python") if block.runs]


def test_every_python_block_of_the_readme_and_docs_runs_or_is_marked_not_to() -> None:
    every = [block for page in PAGES for block in blocks(page)]
    assert not [b.name for b in every if b.language in ("py", "python3", "pycon", "ipython")], \
        "write Python blocks as ```python (or ```python no-run): only those are run or checked"
    assert len(blocks(README, "python")) == 1 and blocks(README, "python")[0].runs  # the test above runs it
    assert {b.page.name for b in docs_python()} >= {"parquet.md", "replay.md", "simulated-matches-and-charts.md"}


@pytest.mark.parametrize("block", docs_python(), ids=lambda b: b.name)
def test_the_python_examples_of_the_docs_run_against_the_demo(block: Block, demo_run: Demo, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """As a reader runs them after the demo: its database the one in use, its lake in ./exports."""
    monkeypatch.setenv("WAREHOUSE_DATABASE_URL", demo_run.url)
    monkeypatch.setenv("WAREHOUSE_DATA_DIR", str(demo_run.data))
    (tmp_path / "exports").symlink_to(demo_run.lake)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, block.name, "exec"), {"__name__": "__docs__"})


def test_the_quick_start_commands_find_the_demos_data(demo_run: Demo, tmp_path: Path) -> None:
    """Typed after the demo, as the README's quick start has them: each finds the demo's rows (psql and
    Jupyter are interactive: psql runs one statement, the notebook's default lake is checked)."""
    section = README.read_text().split("## Quick start", 1)[1].split("\n#", 1)[0]
    (block,) = [b for b in blocks(README, "bash") if b.code in section]
    here = str(Path(sys.executable).parent)  # `.venv/bin` as the reader has it: this test's own virtualenv
    lines = []
    for line in block.code.replace(".venv/bin", here).splitlines():
        if line.startswith("psql "):
            line = line.split("#")[0] + " -Atc 'SELECT count(*) > 0 FROM price_ticks'"
        elif "jupyter lab" in line:
            line = f'{here}/python -c "from warehouse.lifecycle.lakes import default_root; print(default_root())"'
        lines.append(line)
    env = {**os.environ, "WAREHOUSE_DATA_DIR": str(demo_run.data)}
    env.pop("WAREHOUSE_DATABASE_URL", None)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"│ oddspapi +│", out) and re.search(r"│ saba +│", out)  # status: the demo's feeds
    assert re.search(r"\d+ rows?\n", out)  # the steam query
    assert "\nt\n" in out  # psql: the demo's prices
    assert re.search(r"wrote \S+/charts/line-id\d+-\d+\.png", out)
    assert out.rstrip().endswith(str(demo_run.lake))  # the notebook's lake: the demo's
